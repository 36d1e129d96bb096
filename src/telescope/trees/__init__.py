"""Gradient-boosted trees as telescoping kernel models (paper Sec. 4.2, Eq. 9).

``boosting_smoother(gbr, x_train, x_eval) @ y_train + boosting_offset(...)`` reproduces a
squared-loss ``GradientBoostingRegressor``'s predictions; the per-tree kernel is
K_t(x, x_i) = 1{leaf_t(x) = leaf_t(x_i)} / n_leaf. Every function also takes an
``xgboost.XGBRegressor`` fitted with ``telescope.trees.xgb.PARITY`` (optional extra
``xgboost``; NOTE [xgboost parity]). May import scikit-learn; never store, plots or cli.
"""

from telescope.trees.boosting import (
    boosting_offset,
    boosting_smoother,
    effective_parameters,
    max_weight_norm_ratio,
    staged_boosting_smoother,
    tree_kernel,
    tree_kernel_weight_norms,
)

__all__ = [
    "boosting_offset",
    "boosting_smoother",
    "effective_parameters",
    "max_weight_norm_ratio",
    "staged_boosting_smoother",
    "tree_kernel",
    "tree_kernel_weight_norms",
]
