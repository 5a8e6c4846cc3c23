//! The paper's analyses, on a user's own data: object coverage of a train transform
//! ([`coverage`], paper §3.2) and reconstruction PSNR per frequency band ([`frequency`],
//! paper Figure 5), with line plots ([`plot`]); and training curves of run folders
//! ([`curves`]).
pub mod coverage;
pub mod curves;
pub mod frequency;
pub mod plot;
