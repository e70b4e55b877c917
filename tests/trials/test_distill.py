"""The distillation loss: (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)."""

import torch
import torch.nn.functional as F

from nasq_ray.trials.training import distill_loss


def test_distillation_loss_is_the_weighted_sum_of_cross_entropy_and_the_softened_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    assert torch.equal(distill_loss(s, y, t, 0.0, 4.0), F.cross_entropy(s, y))
    T = 3.0
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean()
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * T * T * kl
    assert torch.allclose(distill_loss(s, y, t, 0.7, T), expected, atol=1e-6)
    assert distill_loss(t, y, t, 1.0, T) < 1e-6  # a student equal to its teacher has nothing to learn
