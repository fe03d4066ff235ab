"""Chunkwise-parallel gated delta rule (WY / UT-transform form, gate decay folded in).

Inside a chunk, with b = cumsum(g), S_in the incoming state and D_ij = exp(b_i - b_j)
(j <= i, so <= 1), the pseudo-values u_t = beta_t (v_t - k_t S_{t-1}) satisfy

  u_i + beta_i sum_{j<i} D_ij <k_i, k_j> u_j = beta_i v_i - beta_i exp(b_i) k_i S_in,

a unit lower-triangular system (I + A) U = beta V - W' S_in. Solving it once per chunk
gives U = U0 - W S_in with U0 = (I+A)^-1 beta V and W = (I+A)^-1 beta exp(b) K, both
independent of the state. Then

  O = (exp(b) Q - P W) S_in + P U0,          P = (Q K^T) * D (inclusive lower)
  S_out = (exp(b_C) I - Kd^T W) S_in + Kd^T U0,  Kd = exp(b_C - b) K

so the only sequential work is one [K,K] @ [K,V] product per chunk.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import chunk_len, compute_dtype, resolve_scale, to_chunks


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_delta_rule`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dt = compute_dtype(q)
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    C = chunk_len(T, chunk_size)
    if T == 0:
        return q.new_zeros(B, 0, H, V), S.to(q.dtype)

    qc = to_chunks(q.to(dt) * scale, C)  # [B,H,N,C,K]
    kc = to_chunks(k.to(dt), C)
    vc = to_chunks(v.to(dt), C)  # [B,H,N,C,V]
    b = to_chunks(g.to(dt), C).cumsum(3)  # [B,H,N,C]
    bt = to_chunks(beta.to(dt), C).unsqueeze(-1)  # [B,H,N,C,1]
    N = qc.shape[2]

    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    decay = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()
    eb = b.exp().unsqueeze(-1)  # [B,H,N,C,1]

    kt = kc.transpose(-1, -2)
    qk, kk = (torch.cat([qc, kc], dim=-2) @ kt).split(C, dim=-2)
    A = (bt * kk * decay).tril(-1)
    rhs = torch.cat([bt * vc, bt * eb * kc], dim=-1)
    sol = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)  # [U0 | W]

    P = qk * decay
    p_sol = P @ sol
    o_local, q_eff = p_sol[..., :V], qc * eb - p_sol[..., V:]
    kd_t = (kc * torch.exp(b[..., -1:] - b).unsqueeze(-1)).transpose(-1, -2)
    kd_sol = kd_t @ sol
    eye = torch.eye(K, dtype=dt, device=q.device)
    trans = eb[..., -1:, :] * eye - kd_sol[..., V:]  # [B,H,N,K,K]
    inject = kd_sol[..., :V]  # [B,H,N,K,V]

    states = []
    for n in range(N):
        states.append(S)
        S = trans[:, :, n] @ S + inject[:, :, n]
    o = o_local + q_eff @ torch.stack(states, dim=2)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), S.to(q.dtype)
