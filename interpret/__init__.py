"""interpret: reverse-engineer any component-wise optax optimizer.

The tools of "Reverse engineering learned optimizers reveals known and novel mechanisms" for
any ``optax.GradientTransformation``: probes that record an optimizer's state in a training
loop, the one-coordinate dynamical system ``h' = F(h, g)``, ``u = G(h, g)``, update functions,
fixed points, linearisation, fitted momentum / clipping / schedule / learning-rate adaptation
models, their distillation into an optax chain (with a step-size adaptation where the
optimizer has one), and figures. Depends on jax, optax, numpy and
matplotlib only.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from interpret.adaptation import LRAdaptation, lr_adaptation
from interpret.advantage import (
    AdaptiveScaleState,
    AdvantageKept,
    advantage_kept,
    scale_by_power_rms,
)
from interpret.clipping import ClippingFit, fit_clipping
from interpret.coupling import Coupling, coupling
from interpret.distill import MECHANISMS, Distilled, ModesState, distill, scale_by_modes
from interpret.figures import (
    plot_eigenvalues,
    plot_lr_adaptation,
    plot_modes,
    plot_schedule,
    plot_trajectories,
    plot_update_functions,
)
from interpret.fixed_points import FixedPoints, fixed_points
from interpret.linearize import (
    Linearization,
    LinearizedState,
    linearize,
    linearized_optimizer,
)
from interpret.modes import HeavyBall, MomentumModes, heavy_ball_optimum, momentum_modes
from interpret.momentum import MomentumFit, fit_momentum, momentum_updates, r_squared
from interpret.probe import ProbeState, Records, Rollout, probe, records, rollout
from interpret.problem import (
    GradientStats,
    Problem,
    Recording,
    gradient_stats,
    problem_from_loss,
    record,
)
from interpret.report import Report, reverse_engineer, write_report
from interpret.residual import (
    RESIDUAL_FEATURES,
    RESIDUAL_LOCATIONS,
    candidate_features,
    residual_locations,
    unexplained,
)
from interpret.schedule import ScheduleFit, fit_schedule, zero_gradient_schedule
from interpret.secant_step import SecantState, adapt_step_by_secant, secant_log_scales
from interpret.shape import UpdateShape, update_shape, update_shapes
from interpret.step_scale import AgreementState, adapt_step_by_agreement, agreement_log_scales
from interpret.system import ScalarSystem, effective_learning_rate, scalar_system, typical_state
from interpret.update_function import UpdateFunction, update_function

__all__ = [
    "AdaptiveScaleState",
    "AdvantageKept",
    "AgreementState",
    "ClippingFit",
    "Coupling",
    "Distilled",
    "FixedPoints",
    "GradientStats",
    "HeavyBall",
    "LRAdaptation",
    "Linearization",
    "LinearizedState",
    "MECHANISMS",
    "ModesState",
    "MomentumFit",
    "MomentumModes",
    "ProbeState",
    "Problem",
    "Recording",
    "RESIDUAL_FEATURES",
    "RESIDUAL_LOCATIONS",
    "Records",
    "Report",
    "Rollout",
    "ScalarSystem",
    "ScheduleFit",
    "SecantState",
    "UpdateFunction",
    "UpdateShape",
    "adapt_step_by_agreement",
    "adapt_step_by_secant",
    "advantage_kept",
    "agreement_log_scales",
    "candidate_features",
    "coupling",
    "distill",
    "effective_learning_rate",
    "fit_clipping",
    "fit_momentum",
    "fit_schedule",
    "fixed_points",
    "gradient_stats",
    "heavy_ball_optimum",
    "linearize",
    "linearized_optimizer",
    "lr_adaptation",
    "momentum_modes",
    "momentum_updates",
    "plot_eigenvalues",
    "plot_lr_adaptation",
    "plot_modes",
    "plot_schedule",
    "plot_trajectories",
    "plot_update_functions",
    "probe",
    "problem_from_loss",
    "r_squared",
    "record",
    "records",
    "residual_locations",
    "reverse_engineer",
    "rollout",
    "scalar_system",
    "scale_by_modes",
    "scale_by_power_rms",
    "secant_log_scales",
    "typical_state",
    "unexplained",
    "update_function",
    "update_shape",
    "update_shapes",
    "write_report",
    "zero_gradient_schedule",
]
