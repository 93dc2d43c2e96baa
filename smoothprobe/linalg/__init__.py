"""Estimators over a matrix–vector product, one method per module: `lanczos` (extreme
eigenvalues), `hutchpp` (trace) and `dual_power` (a norm-to-dual-norm operator bound).

Each takes the product as a callable or a scipy `LinearOperator` (`operator.matvec_of`), so it is
tested against a dense matrix; the probes in `smoothprobe.probes` apply them to the Hessian.
"""
