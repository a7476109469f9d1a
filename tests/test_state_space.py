"""The state-space layers of `state_space` (and `hybrid`): the FFT convolution used in training and
the recurrence used when scoring are the same causal map."""

from __future__ import annotations

import torch

from quant_cli.models.torch.state_space import DiagonalSSM, StateSpace, StateSpaceConfig


def test_fft_convolution_and_recurrence_agree_to_float_tolerance():
    torch.manual_seed(0)
    ssm = DiagonalSSM(width=5, state=8, dt_min=0.01, dt_max=0.5)
    u = torch.randn(3, 300, 5)  # (B, L, H): a context long enough for the modes to ring and decay
    conv, recur = ssm.convolve(u), ssm.recur(u)
    assert conv.shape == recur.shape == (3, 300, 5)
    torch.testing.assert_close(conv, recur, rtol=1e-4, atol=1e-4)
    # train() picks the convolution, eval() the recurrence: the network gives the same scores either way
    net = StateSpace(StateSpaceConfig(n_inputs=4, seq_len=64, d_model=6, state=4, layers=2, dropout=0.0))
    x = torch.randn(2, 64, 4)
    torch.testing.assert_close(net.train()(x), net.eval()(x), rtol=1e-4, atol=1e-4)


def test_the_layer_is_causal_in_both_forms():
    torch.manual_seed(1)
    ssm = DiagonalSSM(width=3, state=4)
    u = torch.randn(1, 40, 3)
    later = u.clone()
    later[:, 25:] = torch.randn(1, 15, 3)  # rewrite every step after 24
    for form in (ssm.convolve, ssm.recur):
        torch.testing.assert_close(form(u)[:, :25], form(later)[:, :25], rtol=0, atol=1e-5)
        assert not torch.allclose(form(u)[:, 25:], form(later)[:, 25:])
