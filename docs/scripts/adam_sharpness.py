"""Preconditioned sharpness of the grokking-mnist quick problem under AdamW (docs/grokking.md,
"Why the AdamW smoother runs away").

Full-batch AdamW (n = 200, width 100, α = 6, β = (0.9, 0.99), 100-step warmup) and, at log-spaced
steps, the top eigenvalue of γ_t·a·J diag(1/φ_t) Jᵀ on the training set (a = 2/n for the mean
squared error, φ_t = √v̂_t + ε from the optimizer's state): the matrix that the smoother's
label-space recursion applies to the training residual every step with φ held fixed. Adam's
EMA momentum (β1 = 0.9) is stable for eigenvalues below 2(1 + β1)/(1 − β1) = 38.

    PYTHONPATH=src python docs/scripts/adam_sharpness.py LR WEIGHT_DECAY STEPS
"""
import math, os, sys
import torch
sys.path.insert(0, "src")
from torch.func import functional_call, vmap, jacrev
from telescope.experiments.grokking_mnist import Config, load_task
from telescope.models import MLP, scale_init
torch.set_num_threads(1)
lr, wd, steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
data = load_task(Config(n_train=200, width=100), os.environ.get("TELESCOPE_DATA", "../shared/data"))
torch.manual_seed(0)
m = MLP(64, 100, 3, 1); scale_init(m, 6.0)
opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.99))
sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t+1)/100))
x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
names = [n for n, _ in m.named_parameters()]
def f(params, xi): return functional_call(m, params, (xi[None],)).squeeze()
marks = sorted(set(int(round(10**(k/8))) for k in range(0, 8*int(math.log10(steps))+1)) | {steps})
for t in range(1, steps+1):
    loss = ((m(x).squeeze(-1) - y)**2).mean()
    opt.zero_grad(); loss.backward(); opt.step(); sch.step()
    if t in marks and t >= 100:
        params = {n: p.detach() for n, p in m.named_parameters()}
        J = vmap(jacrev(f), (None, 0))(params, x)
        cur_lr = opt.param_groups[0]["lr"]
        cols = []
        for n, p in m.named_parameters():
            st = opt.state[p]; k = st["step"].item() if torch.is_tensor(st["step"]) else st["step"]
            phi = (st["exp_avg_sq"] / (1 - 0.99**k)).sqrt() + 1e-8
            cols.append((J[n].reshape(len(x), -1), (cur_lr / phi).reshape(-1)))
        Kp = sum(Jn @ (w[:, None] * Jn.T) for Jn, w in cols) * 2 / len(x)
        lam = torch.linalg.eigvalsh(Kp.double())
        with torch.no_grad():
            ete = ((m(xt).squeeze(-1) > .5).float() != yt).float().mean().item()
            etr = ((m(x).squeeze(-1) > .5).float() != y).float().mean().item()
        print(f"{t:6d} tr {etr:.3f} te {ete:.3f} loss {loss.item():.1e}  lambda_max(gamma a J diag(1/phi) J^T) = {lam[-1]:.3g}  #>38: {(lam > 38).sum().item()}  #>2: {(lam > 2).sum().item()}", flush=True)
