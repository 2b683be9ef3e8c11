"""Index constants of the packed model (:class:`ufm.kernels.groups.Model`), shared by every
kernel module so that none imports another only for its numbers.

``Model.ip`` (int64)::

    ip[IP_SPACE]   SPACE_PARAMETERS (W, H, b), SPACE_GRAM (WH, G_W, G_H, b) or SPACE_REDUCED
                   (relation coefficients of an association scheme)
    ip[IP_LOSS]    LOSS_CE (cross-entropy, soft labels) or LOSS_MSE
    ip[IP_BIAS]    1 if the logits carry a bias b
    ip[IP_K], ip[IP_D], ip[IP_N]   sizes (d is 0 outside parameter space)
    ip[IP_NTHETA]  number of coupling pieces (0: Θ = I, the standard UFM)

``Model.coef`` (float64): rates η_W, η_H, η_b, then decays λ_W, λ_H, λ_b, λ_E.
"""

SPACE_PARAMETERS = 0
SPACE_GRAM = 1
SPACE_REDUCED = 2
LOSS_CE = 0
LOSS_MSE = 1

IP_SPACE = 0
IP_LOSS = 1
IP_BIAS = 2
IP_K = 3
IP_D = 4
IP_N = 5
IP_NTHETA = 6
IP_SIZE = 7

C_LR_W = 0
C_LR_H = 1
C_LR_B = 2
C_LAM_W = 3
C_LAM_H = 4
C_LAM_B = 5
C_LAM_E = 6
C_SIZE = 7
