"""Bad input: every case raises ValueError/TypeError whose message names the argument (and, for ranges, the
value received and what is allowed). Nothing is silently clamped or broadcast."""
import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")

S = md.NoiseSchedule.linear(T=100)
X = torch.zeros(4, 2)
POINTS = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
ORACLE = md.OracleDenoiser(POINTS, S, labels=torch.tensor([0, 1, 2, 2]))   # num_classes = 3
PLAIN = md.OracleDenoiser(POINTS, S)
ONE_CLASS = md.OracleDenoiser(POINTS, S, labels=torch.tensor([0, 0, 0, 0]), num_classes=2)   # class 1 is empty
Y = torch.tensor([0, 1, 2, 0])
MLP = md.MLPDenoiser()                                                    # float32 weights, 2-D data
NAN = torch.tensor([[0.0, float("nan")], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])


def model_wrong_shape(x_t, t, y=None):
    return torch.zeros(x_t.shape[0], 1)                                   # would broadcast against (B, 2)


def conditional_zero(x_t, t, y=None):
    return torch.zeros_like(x_t)


conditional_zero.num_classes = 3

CASES = [
    # ---- timesteps
    (lambda: md.q_sample(X, 100, S), ValueError, r"t must lie in \[0, 99\].*got values in \[100, 100\]",
     "t_too_large"),
    (lambda: md.q_sample(X, -1, S), ValueError, r"t must lie in \[0, 99\].*got values in \[-1, -1\]",
     "t_negative"),
    (lambda: md.q_sample(X, torch.tensor([1.0, 2.0, 3.0, 4.0]), S), TypeError,
     r"t must be an integer tensor, got dtype torch.float32", "t_float_tensor"),
    (lambda: md.q_sample(X, 2.0, S), TypeError, r"t must be an int or an integer tensor, got float", "t_float"),
    (lambda: md.q_sample(X, torch.tensor([1, 2, 3]), S), ValueError, r"t must have shape \(4,\).*got \(3,\)",
     "t_wrong_shape"),
    (lambda: md.q_sample(X, True, S), TypeError, r"t must be an integer timestep index, got a bool", "t_bool"),
    (lambda: md.q_step(X, 100, S), ValueError, r"t must lie in \[0, 99\]", "q_step_t_too_large"),
    (lambda: md.q_posterior(X, X, torch.tensor([0, 1, 2, 100]), S), ValueError, r"t must lie in \[0, 99\]",
     "q_posterior_t_too_large"),
    (lambda: md.eps_loss(conditional_zero, X, S, t=torch.tensor([0, 1, 2, 100])), ValueError,
     r"t must lie in \[0, 99\]", "eps_loss_t_too_large"),
    (lambda: md.ddpm_step(X, X, 100, S), ValueError, r"t must be in \[0, 99\], got 100", "ddpm_step_t"),
    (lambda: md.ddim_step(X, X, 10, 10, S), ValueError, r"t_prev must be in \[-1, 9\], got 10", "t_prev_not_before_t"),
    # ---- tensors and shapes
    (lambda: md.q_sample(X, 1, S, noise=torch.zeros(3, 2)), ValueError,
     r"noise must have the same shape as x0: got \(3, 2\) vs \(4, 2\)", "noise_shape"),
    (lambda: md.q_posterior(X, torch.zeros(4, 3), 1, S), ValueError, r"x_t must have the same shape as x0",
     "posterior_shape"),
    (lambda: md.q_sample(NAN, 1, S), ValueError, r"x0 contains NaN or inf", "x0_nan"),
    (lambda: md.q_sample(torch.zeros(4, 2, dtype=torch.long), 1, S), TypeError,
     r"x0 must be a floating-point tensor, got dtype torch.int64", "x0_int"),
    (lambda: md.q_sample([[0.0, 0.0]], 1, S), TypeError, r"x0 must be a torch.Tensor, got list", "x0_list"),
    (lambda: md.q_step(NAN, 1, S), ValueError, r"x_prev contains NaN", "x_prev_nan"),
    (lambda: md.ddim_invert(PLAIN, NAN, S, steps=5), ValueError, r"x0 contains NaN", "invert_x0_nan"),
    (lambda: md.ddpm_step(X, torch.zeros(1, 2), 5, S, noise=X), ValueError,
     r"eps must have the same shape as x_t", "ddpm_step_eps_shape"),
    (lambda: md.ddim_step(X, torch.zeros(1, 2), 5, 4, S), ValueError, r"eps must have the same shape as x_t",
     "ddim_step_eps_shape"),
    (lambda: md.ddpm_step(X, X, 5, S, noise=torch.zeros(4, 1)), ValueError,
     r"noise must have the same shape as x_t", "ddpm_step_noise_shape"),
    (lambda: md.ddpm_step(X, X, 5, S), ValueError, r"noise is required for the DDPM step at t=5", "ddpm_noise_missing"),
    (lambda: md.ddim_step(X, X, 50, 40, S, eta=1.0), ValueError, r"noise is required for the DDIM step 50 -> 40",
     "ddim_noise_missing"),
    (lambda: md.ddim_sample(model_wrong_shape, (4, 2), S, steps=5), ValueError,
     r"model output \(eps\) must have the shape of x_t \(4, 2\), got \(4, 1\)", "sampler_model_output_shape"),
    (lambda: md.eps_loss(model_wrong_shape, X, S), ValueError,
     r"model output \(eps_hat\) must have the shape of x0 \(4, 2\), got \(4, 1\)", "loss_model_output_shape"),
    (lambda: md.eps_loss(conditional_zero, X, S, noise=torch.zeros(4, 3)), ValueError,
     r"noise must have the same shape as x0", "loss_noise_shape"),
    # ---- sampler arguments
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=0), ValueError, r"steps must be in \[1, 100\], got 0",
     "steps_zero"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=101), ValueError, r"steps must be in \[1, 100\], got 101",
     "steps_above_T"),
    (lambda: md.ddim_invert(PLAIN, X, S, steps=101), ValueError, r"steps must be in \[1, 100\], got 101",
     "invert_steps_above_T"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=10.0), TypeError, r"steps must be an int", "steps_float"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, eta=-0.5), ValueError, r"eta must be in \[0.0, inf\), got -0.5",
     "eta_negative"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, eta=float("nan")), ValueError,
     r"eta must be a finite number in \[0.0, inf\), got nan", "eta_nan"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=10, eta=3.0), ValueError,
     r"eta=3.0 is too large for the DDIM step .* sigma\^2 = .* would exceed 1 - alpha_bar_prev", "eta_too_large"),
    (lambda: md.ddim_step(X, X, 50, 40, S, eta=-1.0), ValueError, r"eta must be in \[0.0, inf\)", "ddim_step_eta"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, spacing="uniform"), ValueError,
     r"spacing must be one of 'trailing', 'leading', 'linspace'; got 'uniform'", "spacing_unknown"),
    (lambda: md.ddim_timesteps(100, 5, "quadratic"), ValueError, r"spacing must be one of", "timesteps_spacing"),
    (lambda: md.ddim_timesteps(100, 0), ValueError, r"steps must be in \[1, 100\], got 0", "timesteps_steps"),
    (lambda: md.ddpm_sample(PLAIN, (4, 2), S, variance="fixed_small"), ValueError,
     r"variance must be one of 'beta_tilde', 'beta'; got 'fixed_small'", "variance_unknown"),
    (lambda: md.ddpm_step(X, X, 5, S, variance="large", noise=X), ValueError, r"variance must be one of",
     "ddpm_step_variance_unknown"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=5, clip_x0=0.0), ValueError,
     r"clip_x0 must be in \(0, inf\), got 0.0", "clip_x0_zero"),
    (lambda: md.ddpm_sample(PLAIN, (4, 2), S, clip_x0=-1.0), ValueError, r"clip_x0 must be in \(0, inf\)",
     "clip_x0_negative"),
    (lambda: md.ddim_step(X, X, 5, 4, S, clip_x0=-1.0), ValueError, r"clip_x0 must be in \(0, inf\)",
     "ddim_step_clip_x0"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=5, x_T=NAN), ValueError, r"x_T contains NaN", "x_T_nan"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=5, x_T=torch.zeros(4, 3)), ValueError,
     r"x_T must have shape \(4, 2\), got \(4, 3\)", "x_T_shape"),
    (lambda: md.ddpm_sample(PLAIN, (0, 2), S), ValueError, r"shape must be a tuple of positive ints", "shape_zero"),
    (lambda: md.ddpm_sample(PLAIN, (4, 2), "linear"), TypeError, r"sched must be a NoiseSchedule, got str",
     "sched_type"),
    # ---- guidance and labels
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, steps=5, guidance_scale=3.0), ValueError,
     r"guidance_scale=3.0 needs class labels y", "guidance_without_labels"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, steps=5, y=Y, guidance_scale=float("inf")), ValueError,
     r"guidance_scale must be a finite number in \(-inf, inf\), got inf", "guidance_inf"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, steps=5, y=torch.tensor([0, 1, 2, 4])), ValueError,
     r"y must contain class labels in \[0, 3\] \(3 = no label\), got values in \[0, 4\]", "labels_too_large"),
    (lambda: md.ddpm_sample(ORACLE, (4, 2), S, y=torch.tensor([0, -1, 2, 1])), ValueError,
     r"y must contain class labels in \[0, 3\]", "labels_negative"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, steps=5, y=torch.tensor([0.0, 1.0, 2.0, 0.0])), TypeError,
     r"y must be an integer tensor of class labels", "labels_float"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, steps=5, y=torch.tensor([0, 1])), ValueError,
     r"y must have shape \(4,\), got \(2,\)", "labels_shape"),
    (lambda: md.cfg_combine(torch.zeros(4, 2), torch.zeros(4, 3), 2.0), ValueError,
     r"eps_cond must have the shape of eps_uncond: got \(4, 3\) vs \(4, 2\)", "cfg_shape"),
    (lambda: md.cfg_combine(torch.zeros(4, 2), torch.zeros(4, 2), float("nan")), ValueError, r"scale must be a finite",
     "cfg_scale_nan"),
    (lambda: md.cfg_combine([0.0], torch.zeros(1), 2.0), TypeError, r"eps_uncond must be a floating-point tensor",
     "cfg_not_tensor"),
    # ---- eps_loss
    (lambda: md.eps_loss(conditional_zero, X, S, y=Y, p_uncond=1.5), ValueError,
     r"p_uncond must be in \[0.0, 1.0\], got 1.5", "p_uncond_above_1"),
    (lambda: md.eps_loss(conditional_zero, X, S, y=Y, p_uncond=-0.1), ValueError, r"p_uncond must be in \[0.0, 1.0\]",
     "p_uncond_negative"),
    (lambda: md.eps_loss(conditional_zero, X, S, p_uncond=0.1), ValueError, r"p_uncond=0.1 needs labels y",
     "p_uncond_without_labels"),
    (lambda: md.eps_loss(lambda x, t, y=None: x, X, S, y=Y, p_uncond=0.1), ValueError,
     r"p_uncond=0.1 needs .* a conditional model with num_classes", "p_uncond_unconditional_model"),
    (lambda: md.eps_loss(conditional_zero, X, S, y=torch.tensor([0, 1, 2, 7])), ValueError,
     r"y must contain class labels in \[0, 3\]", "loss_labels_range"),
    (lambda: md.eps_loss(conditional_zero, X, S, reduction="sum"), ValueError,
     r"reduction must be one of 'mean', 'none'; got 'sum'", "reduction_unknown"),
    (lambda: md.eps_loss(conditional_zero, torch.zeros(4, 2, dtype=torch.long), S), TypeError,
     r"x0 must be a floating-point tensor", "loss_x0_int"),
    # ---- oracle
    (lambda: PLAIN(X, 5, Y), ValueError, r"y was given but this OracleDenoiser has no labels",
     "oracle_y_without_labels"),
    (lambda: ORACLE(torch.zeros(4, 3), 5), ValueError, r"x_t must have shape \(B, 2\) like the points, got \(4, 3\)",
     "oracle_x_t_trailing_shape"),
    (lambda: ORACLE(X, 100), ValueError, r"t must lie in \[0, 99\]", "oracle_t"),
    (lambda: ORACLE(X, 5, torch.tensor([0, 1, 2, 5])), ValueError, r"y must contain class labels in \[0, 3\]",
     "oracle_labels_range"),
    (lambda: ONE_CLASS(X, 5, torch.tensor([1, 1, 1, 1])), ValueError, r"y contains a class with no points",
     "oracle_empty_class"),
    (lambda: md.OracleDenoiser(POINTS, S, labels=[0, 1, 2, 2]), TypeError, r"labels must be an integer tensor",
     "oracle_labels_list"),
    (lambda: md.OracleDenoiser(POINTS, S, labels=torch.tensor([0, 1])), ValueError,
     r"labels must have shape \(4,\), got \(2,\)", "oracle_labels_shape"),
    (lambda: md.OracleDenoiser(POINTS, S, labels=torch.tensor([0, 1, 2, 3]), num_classes=2), ValueError,
     r"labels must contain class labels in \[0, 1\]", "oracle_labels_above_num_classes"),
    (lambda: md.OracleDenoiser(POINTS, S, num_classes=3), ValueError, r"num_classes was given without labels",
     "oracle_num_classes_without_labels"),
    (lambda: md.OracleDenoiser(POINTS, "linear"), TypeError, r"sched must be a NoiseSchedule", "oracle_sched"),
    (lambda: md.OracleDenoiser(NAN, S), ValueError, r"points contains NaN", "oracle_points_nan"),
    # ---- schedules
    (lambda: md.NoiseSchedule(torch.tensor([0.1, 1.5], dtype=torch.float64)), ValueError,
     r"betas must lie in \(0, 1\) .*got values in \[0.1, 1.5\]", "beta_above_1"),
    (lambda: md.NoiseSchedule(torch.tensor([0.0, 0.1])), ValueError, r"betas must lie in \(0, 1\)", "beta_zero"),
    (lambda: md.NoiseSchedule(torch.tensor([0.5, 1.0, 0.5])), ValueError,
     r"betas must lie in \(0, 1\) \(only the last may equal 1", "inner_beta_one"),
    (lambda: md.NoiseSchedule(torch.tensor([1e-20, 0.5], dtype=torch.float64)), ValueError,
     r"betas must be large enough that 1 - beta < 1 in float64.*got a smallest beta of 1e-20", "beta_below_float64"),
    (lambda: md.NoiseSchedule(torch.tensor([0.1, float("nan")])), ValueError, r"betas must be finite", "beta_nan"),
    (lambda: md.NoiseSchedule(torch.full((2, 2), 0.1)), ValueError, r"betas must be a 1-D tensor.*got shape \(2, 2\)",
     "betas_2d"),
    (lambda: md.NoiseSchedule.linear(T=100, beta_start=0.0), ValueError, r"beta_start must be in \(0, 1\), got 0.0",
     "beta_start_zero"),
    (lambda: md.NoiseSchedule.linear(T=100, beta_start=-1e-4), ValueError, r"beta_start must be in \(0, 1\)",
     "beta_start_negative"),
    (lambda: md.NoiseSchedule.linear(T=100, beta_end=1.0), ValueError, r"beta_end must be in \(0, 1\), got 1.0",
     "beta_end_one"),
    (lambda: md.NoiseSchedule.sigmoid(T=100, beta_end=2.0), ValueError, r"beta_end must be in \(0, 1\)",
     "sigmoid_beta_end"),
    (lambda: md.NoiseSchedule.sigmoid(T=100, width=0.0), ValueError, r"width must be in \(0, inf\)", "sigmoid_width"),
    (lambda: md.NoiseSchedule.linear(T=0), ValueError, r"T must be in \[1, inf\], got 0", "T_zero"),
    (lambda: md.NoiseSchedule.cosine(T=-5), ValueError, r"T must be in \[1, inf\], got -5", "T_negative"),
    (lambda: md.NoiseSchedule.linear(T=10.5), TypeError, r"T must be an int, got 10.5", "T_float"),
    (lambda: md.NoiseSchedule.linear(T="1000"), TypeError, r"T must be an int", "T_str"),
    (lambda: md.ddim_timesteps(0, 1), ValueError, r"T must be in \[1, inf\]", "timesteps_T"),
    (lambda: md.NoiseSchedule.cosine(T=100, max_beta=1.0), ValueError, r"max_beta must be in \(0, 1\), got 1.0",
     "max_beta_one"),
    (lambda: md.NoiseSchedule.cosine(T=100, s=-0.1), ValueError, r"s must be in \[0, inf\), got -0.1", "cosine_s"),
    (lambda: md.NoiseSchedule.from_name("quadratic"), ValueError,
     r"name must be one of 'linear', 'cosine', 'sigmoid' \(the schedule\); got 'quadratic'", "schedule_unknown"),
    (lambda: md.NoiseSchedule.linear(T=1).rescale_zero_terminal_snr(), ValueError,
     r"rescale_zero_terminal_snr needs T >= 2.*got T=1", "rescale_T1"),
    # the public boundary: types of the sampling arguments
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, generator=0), TypeError,
     r"generator must be a torch.Generator or None, got 0 \(int\)", "generator_int"),
    (lambda: md.q_sample(X, 1, S, generator=0), TypeError, r"generator must be a torch.Generator", "q_sample_generator"),
    (lambda: md.q_sample(X, 1, "linear"), TypeError, r"sched must be a NoiseSchedule, got str \('linear'\)",
     "q_sample_sched_str"),
    (lambda: md.q_posterior(X, X, 1, None), TypeError, r"sched must be a NoiseSchedule", "q_posterior_sched_none"),
    (lambda: md.ddpm_step(X, X, 5, "linear"), TypeError, r"sched must be a NoiseSchedule", "ddpm_step_sched_str"),
    (lambda: md.ddim_step(X, X, 5, 4, "linear"), TypeError, r"sched must be a NoiseSchedule", "ddim_step_sched_str"),
    (lambda: md.eps_loss(md.MLPDenoiser(), X, "linear"), TypeError, r"sched must be a NoiseSchedule",
     "eps_loss_sched_str"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, device="bogus"), ValueError,
     r"device must be a torch device such as 'cpu'.*got 'bogus'", "device_bogus"),
    (lambda: md.ddim_sample(ORACLE, (4, 2), S, dtype=torch.int64), TypeError,
     r"dtype must be a floating-point torch.dtype.*got torch.int64", "dtype_int"),
    (lambda: md.ddim_sample(42, (4, 2), S), TypeError, r"model must be callable as model\(x_t, t, y\)", "model_int"),
    (lambda: md.ddim_sample(lambda x, t, y=None: x * float("nan") if int(t[0]) < 30 else 0 * x, (4, 2), S, steps=10),
     FloatingPointError, r"prediction \(eps\) held NaN or inf at model call 8 of 10 \(timestep t=29\)", "nan_model_ddim"),
    (lambda: md.ddpm_sample(lambda x, t, y=None: x * float("inf"), (4, 2), S), FloatingPointError,
     r"held NaN or inf at model call 1 of 100 \(timestep t=99\)", "inf_model_ddpm"),
    (lambda: md.ddim_sample(PLAIN, (4, 2), S, steps=5, callback="print"), TypeError,
     r"callback must be callable as callback\(i, t, x_t, x0_hat\) or None, got str", "callback_str"),
    (lambda: md.ddpm_sample(PLAIN, (4, 2), S, callback=1), TypeError, r"callback must be callable", "ddpm_callback"),
    (lambda: md.ddim_sample(MLP, (4, 2), S, steps=5, dtype=torch.float64), TypeError,
     r"the sampling precision is torch.float64 but the model's weights are torch.float32", "sampler_dtype_mismatch"),
    (lambda: md.ddim_sample(MLP, (4, 2), S, steps=5, x_T=X.double()), TypeError,
     r"the sampling precision \(x_T's dtype\) is torch.float64 but the model's weights are torch.float32",
     "sampler_x_T_dtype_mismatch"),
    (lambda: md.eps_loss(MLP, X.double(), S), TypeError, r"x0 is torch.float64 but the model's weights are torch.float32",
     "loss_dtype_mismatch"),
    (lambda: md.sdedit(MLP, X.double(), S, strength=0.5, steps=3), TypeError,
     r"is torch.float64 but the model's weights are torch.float32", "sdedit_dtype_mismatch"),
    # ---- empty batches and non-finite tensors entering the public math
    (lambda: md.q_sample(torch.zeros(0, 2), 1, S), ValueError,
     r"x0 is an empty batch \(shape \(0, 2\)\); it needs at least one example", "q_sample_empty"),
    (lambda: md.eps_loss(conditional_zero, torch.zeros(0, 2), S), ValueError, r"x0 is an empty batch", "loss_empty"),
    (lambda: md.ddim_invert(PLAIN, torch.zeros(0, 2), S, steps=5), ValueError, r"x0 is an empty batch",
     "invert_empty"),
    (lambda: md.eps_loss(conditional_zero, NAN, S), ValueError, r"x0 contains NaN or inf", "loss_x0_nan"),
    (lambda: md.eps_loss(conditional_zero, X, S, noise=NAN), ValueError, r"noise contains NaN or inf", "loss_noise_nan"),
    (lambda: md.q_sample(X, 1, S, noise=NAN), ValueError, r"noise contains NaN or inf", "q_sample_noise_nan"),
    (lambda: md.ddpm_step(X, NAN, 5, S, noise=X), ValueError, r"eps contains NaN or inf", "ddpm_step_eps_nan"),
    (lambda: md.ddpm_step(NAN, X, 5, S, noise=X), ValueError, r"x_t contains NaN or inf", "ddpm_step_x_t_nan"),
    (lambda: md.ddpm_step(X, X, 5, S, noise=NAN), ValueError, r"noise contains NaN or inf", "ddpm_step_noise_nan"),
    (lambda: md.ddim_step(X, NAN, 5, 4, S), ValueError, r"eps contains NaN or inf", "ddim_step_eps_nan"),
    (lambda: md.ddim_step(X, X, 50, 40, S, eta=1.0, noise=NAN), ValueError, r"noise contains NaN or inf",
     "ddim_step_noise_nan"),
    (lambda: md.slerp(X + 1, NAN, 0.5), ValueError, r"z1 contains NaN or inf", "slerp_z1_nan"),
    (lambda: md.cfg_combine(X, NAN, 2.0), ValueError, r"eps_cond contains NaN or inf", "cfg_eps_cond_nan"),
    (lambda: md.frechet_distance(torch.tensor([float("nan"), 0.0]), torch.eye(2), torch.zeros(2), torch.eye(2)),
     ValueError, r"mu1 contains NaN or inf", "frechet_mu1_nan"),
    # ---- the conversions between eps, x_0 and v
    (lambda: md.x0_from_eps(X, X, 1.5), ValueError, r"alpha_bar must be in \[0.0, 1.0\], got 1.5", "x0_from_eps_ab_1.5"),
    (lambda: md.x0_from_eps(X, X, -0.1), ValueError, r"alpha_bar must be in \[0.0, 1.0\], got -0.1",
     "x0_from_eps_ab_negative"),
    (lambda: md.eps_from_x0(X, X, 1.0), ValueError, r"alpha_bar must be in \[0.0, 1.0\), got 1.0",
     "eps_from_x0_ab_one"),
    (lambda: md.eps_from_x0(X, X, torch.tensor([[0.5], [0.5], [1.0], [0.5]])), ValueError,
     r"alpha_bar must lie in \[0, 1\), got values in \[0.5, 1.0\]", "eps_from_x0_ab_tensor_one"),
    (lambda: md.x0_from_v(X, X, torch.tensor([[0.5], [float("nan")], [0.5], [0.5]])), ValueError,
     r"alpha_bar must lie in \[0, 1\]", "x0_from_v_ab_nan"),
    (lambda: md.eps_from_v(X, X, torch.tensor([0, 1, 1, 0])), TypeError,
     r"alpha_bar must be a float or a floating-point tensor, got dtype torch.int64", "eps_from_v_ab_int"),
    (lambda: md.v_from_eps(X, X, torch.full((3, 1), 0.5)), ValueError,
     r"alpha_bar of shape \(3, 1\) must broadcast against x0 \(4, 2\) without changing its shape, e.g. shape \(4, 1\)",
     "v_from_eps_ab_shape"),
    (lambda: md.v_from_eps(X, torch.zeros(4, 1), 0.5), ValueError, r"eps must have the same shape as x0: got \(4, 1\)",
     "v_from_eps_broadcast"),
    (lambda: md.x0_from_eps(X, NAN, 0.5), ValueError, r"eps contains NaN or inf", "x0_from_eps_nan"),
    (lambda: md.eps_from_x0(NAN, X, 0.5), ValueError, r"x_t contains NaN or inf", "eps_from_x0_nan"),
    (lambda: md.x0_from_eps(X, X, "0.5"), TypeError, r"alpha_bar must be a real number, got '0.5'", "alpha_bar_str"),
]


@pytest.mark.parametrize("call,exc,match", [c[:3] for c in CASES], ids=[c[3] for c in CASES])
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_there_are_enough_cases():
    assert len(CASES) >= 25 and len({c[3] for c in CASES}) == len(CASES)


def test_good_input_next_to_each_boundary_is_accepted():
    """The boundaries are where the messages say: the last valid value of each range works."""
    md.q_sample(X, 99, S)
    md.q_sample(X, 0, S)
    md.ddim_sample(PLAIN, (4, 2), S, steps=100)
    md.ddim_sample(PLAIN, (4, 2), S, steps=1)
    md.ddim_sample(PLAIN, (4, 2), S, steps=10, eta=1.0, generator=torch.Generator().manual_seed(0))
    md.ddim_sample(ORACLE, (4, 2), S, steps=5, y=torch.tensor([0, 1, 2, 3]), guidance_scale=2.0)   # 3 = no label
    md.eps_loss(conditional_zero, X, S, y=Y, p_uncond=1.0)
    md.eps_loss(conditional_zero, X, S, y=Y, p_uncond=0.0)
    md.NoiseSchedule(torch.tensor([0.1, 1.0], dtype=torch.float64))                 # last beta may be 1
    md.NoiseSchedule.cosine(T=1)
    for convert in (md.x0_from_eps, md.v_from_eps, md.x0_from_v, md.eps_from_v):     # alpha_bar in [0, 1]
        for ab in (0.0, 1.0, torch.tensor([[0.0], [1.0], [0.5], [1.0]])):
            assert torch.isfinite(convert(X + 1, X, ab)).all()
    md.eps_from_x0(X, X, 0.0)
    md.eps_from_x0(X, X, torch.tensor([0.0, 1.0 - 2**-20]).reshape(1, 2))              # broadcasts along the batch
    md.ddim_sample(md.MLPDenoiser().double(), (4, 2), S, steps=2, dtype=torch.float64)   # one precision for both
