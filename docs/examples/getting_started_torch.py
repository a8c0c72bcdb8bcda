"""Getting started (PyTorch): a 1D Poisson PINN trained by SNGD, a torch.optim optimizer."""

import functools
import math

import torch
from sketchlinalg_torch import SNGD, Term, laplacian, pinn_residual, pinn_system

# -u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0; the solution is u* = sin(pi x).
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(1, 20),
    torch.nn.Tanh(),
    torch.nn.Linear(20, 20),
    torch.nn.Tanh(),
    torch.nn.Linear(20, 1),
).double()  # natural gradients want float64
interior = torch.linspace(0, 1, 66, dtype=torch.float64)[1:-1, None]  # 64 points, shape (64, 1)
terms = [
    Term(lambda u, x: -laplacian(u, x) - math.pi**2 * torch.sin(math.pi * x[0]), interior),
    Term(lambda u, x: u(x), torch.tensor([[0.0], [1.0]], dtype=torch.float64), weight=2.0),
]
opt = SNGD(
    model.named_parameters(),
    functools.partial(pinn_system, model, terms=terms),  # params -> (r, J)
    residual_fn=functools.partial(pinn_residual, model, terms=terms),  # for the line search
)  # no rank, no damping: both adapt (sketchlinalg.StepEngine)
for _ in range(50):
    loss = opt.step()  # J, Nystrom sketch, grid line search; returns 1/2 ||r||^2 before the step

x = torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
with torch.no_grad():
    u, exact = model(x)[:, 0], torch.sin(math.pi * x[:, 0])
error = float(torch.linalg.norm(u - exact) / torch.linalg.norm(exact))
print(f"SNGD, 50 steps: loss {float(loss):.2e}, relative L2 error {error:.2e}")
last = opt.last_step
print(f"last step: {last.status.name}, damping {float(last.damping):.1e}, rank {last.rank}")
print(f"last direction: {opt.direction_info.message}; Jacobian {opt.jacobian_path}")
assert error < 1e-5
