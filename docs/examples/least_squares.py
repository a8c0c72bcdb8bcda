"""Getting started (NumPy / SciPy users): sketchlinalg.least_squares as a drop-in for
scipy.optimize.least_squares(method="lm"), on the NIST StRD problem Misra1a."""

import numpy as np
import scipy.optimize

import sketchlinalg as sl

# NIST StRD Misra1a: y = b1 (1 - exp(-b2 x)), 14 observations, certified b1, b2 below.
# fmt: off
x = np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8,
              378.4, 434.8, 477.3, 536.8, 593.1, 689.1, 760.0])
y = np.array([10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02,
              44.82, 50.76, 55.05, 61.01, 66.40, 75.47, 81.78])
# fmt: on
certified = np.array([2.3894212918e02, 5.5015643181e-04])


def residual(b):
    return b[0] * (1.0 - np.exp(-b[1] * x)) - y


def jacobian(b):  # (m, n) = (14, 2); omit jac= for finite differences
    e = np.exp(-b[1] * x)
    return np.stack([1.0 - e, b[0] * x * e], axis=1)


x0 = np.array([500.0, 1e-4])  # NIST start 1
ours = sl.least_squares(residual, x0, jac=jacobian, ftol=1e-15, xtol=1e-15, gtol=1e-15)
ref = scipy.optimize.least_squares(
    residual, x0, jac=jacobian, method="lm", ftol=1e-15, xtol=1e-15, gtol=1e-15
)
for name, res in (("sketchlinalg", ours), ("scipy lm", ref)):
    lre = -np.log10(np.max(np.abs(res.x - certified) / np.abs(certified)))
    print(
        f"{name:12s} status {res.status}, nfev {res.nfev:3d}, cost {res.cost:.10e}, "
        f"correct digits (LRE) {lre:.1f}"
    )
print(f"direction used: {ours.direction}; message: {ours.message}")
assert ours.success and np.allclose(ours.x, certified, rtol=1e-6)
