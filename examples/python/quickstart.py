"""steadystep from PyTorch: a cosine schedule and a sync-free gradient norm in a plain loop."""

import torch

import steadystep

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
sched = steadystep.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=1e-3)
x = torch.randn(512, 16)
y = torch.sin(x.sum(1, keepdim=True))
for epoch in range(20):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    grad_norm = steadystep.get_total_norm([p.grad for p in model.parameters()])  # 0-dim tensor, no sync
    opt.step()
    sched.step()
    print(f"epoch {epoch:2d}  loss {loss.item():.5f}  lr {sched.get_last_lr()[0]:.5f}  grad norm {grad_norm.item():.4f}")
