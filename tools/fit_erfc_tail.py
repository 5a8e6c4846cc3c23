"""Fit the erfc tail polynomial used by pixmim-core/src/nn/vmath.rs (`erf`).

For 3/4 <= |x| <= 4, erf(x) = 1 - exp(-x^2) * G(x) with G(x) = erfc(x) * exp(x^2), a smooth,
slowly varying function. G is fitted as a degree-7 polynomial in t = 1 / (1 + x/2), minimising
the maximum relative error (Lawson's iteratively reweighted least squares on a dense grid).
Run: python3 tools/fit_erfc_tail.py   (needs numpy; prints the Rust constants)
"""
import math

import numpy as np

DEGREE = 7
x = np.linspace(0.75, 4.0, 30001)
g = np.array([math.erfc(v) * math.exp(v * v) for v in x])
t = 1.0 / (1.0 + 0.5 * x)
vander = np.vander(t, DEGREE + 1, increasing=True)
rows = vander / g[:, None]  # relative error
weights = np.full(len(x), 1.0 / len(x))
for _ in range(300):
    sw = np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(rows * sw[:, None], sw, rcond=None)
    err = np.abs(rows @ coef - 1.0)
    weights *= err
    weights /= weights.sum()
print(f"// max relative error of G in f64: {err.max():.2e}")
print("const ERFC_TAIL: [f32; %d] = [" % (DEGREE + 1))
for c in coef:
    print(f"    {c:.9e},")
print("];")
