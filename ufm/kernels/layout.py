"""Index constants of the packed model (:class:`ufm.kernels.groups.Model`), shared by every
kernel module so that none imports another only for its numbers.

``Model.ip`` (int64)::

    ip[IP_SPACE]   SPACE_PARAMETERS (W, H, b), SPACE_GRAM (WH, G_W, G_H, b) or SPACE_REDUCED
                   (relation coefficients of an association scheme)
    ip[IP_LOSS]    LOSS_CE (cross-entropy, soft labels) or LOSS_MSE
    ip[IP_BIAS]    1 if the logits carry a bias b
    ip[IP_K], ip[IP_D], ip[IP_N]   sizes (d is 0 outside parameter space)
    ip[IP_NTHETA]  number of coupling pieces (0: Θ = I, the standard UFM)
    ip[IP_LAYERS]  hidden linear layers L of the deep-backbone model (SPACE_DEEP_*; 0 otherwise)

``Model.coef`` (float64): rates η_W, η_H, η_b, then decays λ_W, λ_H, λ_b, λ_E, then the deep
model's layer rate η_L and layer decay λ_L (:mod:`ufm.kernels.deep`).

The deep-backbone spaces (:mod:`ufm.kernels.deep`): SPACE_DEEP_PARAMETERS integrates
(W, H₀, W₁ … W_L, b); SPACE_DEEP_BALANCED the logits Z (and b) on the balanced manifold.
"""

SPACE_PARAMETERS = 0
SPACE_GRAM = 1
SPACE_REDUCED = 2
SPACE_DEEP_PARAMETERS = 3
SPACE_DEEP_BALANCED = 4
LOSS_CE = 0
LOSS_MSE = 1

IP_SPACE = 0
IP_LOSS = 1
IP_BIAS = 2
IP_K = 3
IP_D = 4
IP_N = 5
IP_NTHETA = 6
IP_LAYERS = 7
IP_SIZE = 8

C_LR_W = 0
C_LR_H = 1
C_LR_B = 2
C_LAM_W = 3
C_LAM_H = 4
C_LAM_B = 5
C_LAM_E = 6
C_LR_L = 7
C_LAM_L = 8
C_SIZE = 9
