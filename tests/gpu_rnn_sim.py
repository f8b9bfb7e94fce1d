# The device algorithm of src/ops/cuda/rnn_cuda.cu, run on the CPU: a
# line-by-line numpy transliteration (the same flat buffers and offsets,
# cuBLAS's column-major sgemm with its leading dimensions as rm_gemm calls
# it, the gate kernels per (sequence, unit)), checked against
# torch.nn.LSTM / torch.nn.GRU in float64 run sequence by sequence
# (lengths with padding last and first, initial state, gradient of the
# final state). It checks the layouts, strides and masking of the CUDA
# code without a GPU (written before any device run); tests/test_gpu_rnn.c
# checks the CUDA code itself on a GPU. Keep it in step with rnn_cuda.cu.
#
#   /usr/bin/python3 tests/gpu_rnn_sim.py      (needs numpy and torch; ~10 s)
#
# Prints the relative errors (y, hn, dx, dW_ih, dW_hh, db_ih, db_hh) per
# case and exits 1 when one is above 1e-5.
import numpy as np, torch
np.random.seed(0)

def cm_view(buf, off, rows, cols, ld):
    idx = off + np.arange(rows)[:, None] + np.arange(cols)[None, :] * ld
    return idx

def cublas_sgemm(opa, opb, m, n, k, A, lda, aoff, B, ldb, boff, beta, C, ldc, coff):
    # op(A) m x k; A stored col-major: opN -> A is m x k (ld lda), opT -> A is k x m
    if opa == 'N': Am = A[cm_view(A, aoff, m, k, lda)]
    else: Am = A[cm_view(A, aoff, k, m, lda)].T
    if opb == 'N': Bm = B[cm_view(B, boff, k, n, ldb)]
    else: Bm = B[cm_view(B, boff, n, k, ldb)].T
    ci = cm_view(C, coff, m, n, ldc)
    C[ci] = (Am.astype(np.float64) @ Bm.astype(np.float64)).astype(np.float32) + beta * C[ci]

def rm_gemm(ta, tb, M, N, K, A, aoff, lda, B, boff, ldb, beta, C, coff, ldc):
    if M <= 0 or N <= 0: return
    cublas_sgemm('T' if tb else 'N', 'T' if ta else 'N', N, M, K, B, ldb, boff, A, lda, aoff, beta, C, ldc, coff)

sigm = lambda v: 1/(1+np.exp(-v))
th = lambda v: 1 - 2/(np.exp(2*v)+1)

def live(len_, pad_left, T, b, t):
    if len_ is None: return True
    return t >= T - len_[b] if pad_left else t < len_[b]

def forward(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, b_ih, b_hh, h0, c0, want_y):
    G = 4 if lstm else 3; GH = G*H; S = N*T
    save = np.zeros(S*(7*H if lstm else 7*H), np.float32)
    gates = 0
    hpart = None if lstm else S*GH
    hprev = S*GH if lstm else hpart + S*GH
    cprev = hprev + S*H if lstm else None
    tc = cprev + S*H if lstm else None
    y = np.zeros(N*T*H, np.float32) if want_y else None
    hn = np.zeros(N*H, np.float32); cn = np.zeros(N*H, np.float32) if lstm else None
    # seed
    for i in range(S*GH):
        j = i % GH
        v = b_ih[j]
        if lstm: v = v + b_hh[j]
        save[gates+i] = v
    rm_gemm(0, 1, S, GH, F, x, 0, F, w_ih, 0, F, 1.0, save, gates, GH)
    for i in range(N*H):
        b, j = divmod(i, H)
        at = b*T*H + j
        save[hprev+at] = h0[i] if h0 is not None else 0
        if lstm: save[cprev+at] = c0[i] if c0 is not None else 0
    for t in range(T):
        if lstm:
            rm_gemm(0, 1, N, GH, H, save, hprev + t*H, T*H, w_hh, 0, H, 1.0, save, gates + t*GH, T*GH)
            for i in range(N*H):
                b, j = divmod(i, H); row = b*T + t; gr = gates + row*4*H
                on = live(len_, pad_left, T, b, t)
                hv = save[hprev+row*H+j]; cv = save[cprev+row*H+j]; thv = 0.0
                if on:
                    ig = sigm(save[gr+j]); fg = sigm(save[gr+H+j]); gg = th(save[gr+2*H+j]); og = sigm(save[gr+3*H+j])
                    save[gr+j], save[gr+H+j], save[gr+2*H+j], save[gr+3*H+j] = ig, fg, gg, og
                    cv = fg*cv + ig*gg; thv = th(cv); hv = og*thv
                save[tc+row*H+j] = thv
                if y is not None: y[row*H+j] = hv if on else 0
                if t+1 < T:
                    save[hprev+(row+1)*H+j] = hv; save[cprev+(row+1)*H+j] = cv
                else:
                    hn[b*H+j] = hv; cn[b*H+j] = cv
        else:
            rm_gemm(0, 1, N, GH, H, save, hprev + t*H, T*H, w_hh, 0, H, 0.0, save, hpart + t*GH, T*GH)
            for i in range(N*H):
                b, j = divmod(i, H); row = b*T + t; gr = gates + row*3*H; hq = hpart + row*3*H
                save[hq+j] += b_hh[j]; save[hq+H+j] += b_hh[H+j]; save[hq+2*H+j] += b_hh[2*H+j]
                on = live(len_, pad_left, T, b, t)
                hv = save[hprev+row*H+j]
                if on:
                    r = sigm(save[gr+j]+save[hq+j]); z = sigm(save[gr+H+j]+save[hq+H+j])
                    nn = th(save[gr+2*H+j] + r*save[hq+2*H+j])
                    save[gr+j], save[gr+H+j], save[gr+2*H+j] = r, z, nn
                    hv = (1-z)*nn + z*hv
                if y is not None: y[row*H+j] = hv if on else 0
                if t+1 < T: save[hprev+(row+1)*H+j] = hv
                else: hn[b*H+j] = hv
    return save, y, hn, cn

def backward(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, save, dy, dhn, want_dx):
    G = 4 if lstm else 3; GH = G*H; S = N*T; NH = N*H
    gates = 0
    hpart = None if lstm else S*GH
    hprev = S*GH if lstm else hpart + S*GH
    cprev = hprev + S*H if lstm else None
    tc = cprev + S*H if lstm else None
    work = np.zeros(S*GH*(1 if lstm else 2) + 3*NH, np.float32)
    dP = 0; dHp = dP if lstm else dP + S*GH
    dh = dHp + S*GH; dh2 = dh + NH; dc = dh2 + NH
    for i in range(NH):
        work[dh+i] = dhn[i] if dhn is not None else 0; work[dc+i] = 0
    for t in range(T-1, -1, -1):
        for i in range(NH):
            b, j = divmod(i, H); row = b*T + t; pr = dP + row*G*H; qr = dHp + row*G*H
            if not live(len_, pad_left, T, b, t):
                for k in range(G):
                    work[pr+k*H+j] = 0
                    if not lstm: work[qr+k*H+j] = 0
                work[dh2+i] = work[dh+i]; continue
            gr = gates + row*G*H
            gh = work[dh+i] + (dy[row*H+j] if dy is not None else 0)
            if lstm:
                ig, fg, gg, og = save[gr+j], save[gr+H+j], save[gr+2*H+j], save[gr+3*H+j]
                thj = save[tc+row*H+j]; cp = save[cprev+row*H+j]
                dcj = work[dc+i] + gh*og*(1-thj*thj)
                work[pr+j] = dcj*gg*ig*(1-ig); work[pr+H+j] = dcj*cp*fg*(1-fg)
                work[pr+2*H+j] = dcj*ig*(1-gg*gg); work[pr+3*H+j] = gh*thj*og*(1-og)
                work[dc+i] = dcj*fg; work[dh2+i] = 0
            else:
                hq = hpart + row*3*H
                r, z, nn = save[gr+j], save[gr+H+j], save[gr+2*H+j]
                da = gh*(1-z)*(1-nn*nn); dr = da*save[hq+2*H+j]*r*(1-r)
                dz = gh*(save[hprev+row*H+j]-nn)*z*(1-z)
                work[pr+j] = work[qr+j] = dr; work[pr+H+j] = work[qr+H+j] = dz
                work[pr+2*H+j] = da; work[qr+2*H+j] = da*r; work[dh2+i] = gh*z
        rm_gemm(0, 0, N, H, GH, work, dHp + t*GH, T*GH, w_hh, 0, H, 1.0, work, dh2, H)
        dh, dh2 = dh2, dh
    dw_ih = np.zeros(GH*F, np.float32); dw_hh = np.zeros(GH*H, np.float32)
    rm_gemm(1, 0, GH, F, S, work, dP, GH, x, 0, F, 0.0, dw_ih, 0, F)
    rm_gemm(1, 0, GH, H, S, work, dHp, GH, save, hprev, H, 0.0, dw_hh, 0, H)
    db_ih = work[dP:dP+S*GH].reshape(S, GH).astype(np.float64).sum(0).astype(np.float32)
    db_hh = db_ih.copy() if lstm else work[dHp:dHp+S*GH].reshape(S, GH).astype(np.float64).sum(0).astype(np.float32)
    dx = None
    if want_dx:
        dx = np.zeros(S*F, np.float32)
        rm_gemm(0, 0, S, F, GH, work, dP, GH, w_ih, 0, F, 0.0, dx, 0, F)
    return dx, dw_ih, dw_hh, db_ih, db_hh

def ref(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy, dhn):
    m = (torch.nn.LSTM if lstm else torch.nn.GRU)(F, H, batch_first=True).double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.tensor(w_ih.reshape(-1, F))); m.weight_hh_l0.copy_(torch.tensor(w_hh.reshape(-1, H)))
        m.bias_ih_l0.copy_(torch.tensor(b_ih)); m.bias_hh_l0.copy_(torch.tensor(b_hh))
    X = torch.tensor(x.reshape(N, T, F), dtype=torch.float64, requires_grad=True)
    ys = torch.zeros(N, T, H, dtype=torch.float64); loss = 0
    hns = []
    for b in range(N):
        L = T if len_ is None else len_[b]
        s0 = 0 if (len_ is None or not pad_left) else T - L
        hb = torch.tensor(h0[b*H:(b+1)*H], dtype=torch.float64).view(1, 1, H)
        st = (hb, torch.tensor(c0[b*H:(b+1)*H], dtype=torch.float64).view(1, 1, H)) if lstm else hb
        if L > 0:
            out, stn = m(X[b:b+1, s0:s0+L], st)
            loss = loss + (out[0] * torch.tensor(dy.reshape(N, T, H)[b, s0:s0+L], dtype=torch.float64)).sum()
            ys[b, s0:s0+L] = out[0].detach()
        else:
            stn = st
        hnb = stn[0] if lstm else stn
        loss = loss + (hnb.view(-1) * torch.tensor(dhn[b*H:(b+1)*H], dtype=torch.float64)).sum()
        hns.append(hnb.view(-1).detach())
    loss.backward()
    g = lambda p: p.grad.numpy().ravel()
    return ys.numpy().ravel(), torch.cat(hns).numpy(), X.grad.numpy().ravel(), g(m.weight_ih_l0), g(m.weight_hh_l0), g(m.bias_ih_l0), g(m.bias_hh_l0)

def err(a, b): return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

worst = 0
for lstm in (1, 0):
    for len_, pad_left in ((None, 0), ([5, 2, 0, 3], 0), ([5, 2, 0, 3], 1)):
        N, T, F, H = 4, 5, 3, 6; G = 4 if lstm else 3
        r = lambda *s: np.random.uniform(-0.7, 0.7, s).astype(np.float32).ravel()
        x, w_ih, w_hh, b_ih, b_hh = r(N*T*F), r(G*H*F), r(G*H*H), r(G*H), r(G*H)
        h0, c0 = r(N*H), r(N*H)
        dy, dhn = r(N*T*H), r(N*H)
        save, y, hn, cn = forward(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, b_ih, b_hh, h0, c0 if lstm else None, True)
        dx, dwi, dwh, dbi, dbh = backward(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, save, dy, dhn, True)
        ry, rhn, rdx, rdwi, rdwh, rdbi, rdbh = ref(lstm, N, T, F, H, len_, pad_left, x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy, dhn)
        es = [err(y, ry), err(hn, rhn), err(dx, rdx), err(dwi, rdwi), err(dwh, rdwh), err(dbi, rdbi), err(dbh, rdbh)]
        print('lstm' if lstm else 'gru ', len_, pad_left, ' '.join('%.1e' % e for e in es))
        worst = max(worst, max(es))
print('worst', worst)
raise SystemExit(0 if worst < 1e-5 else 1)
