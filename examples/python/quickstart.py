import torch

import steadystep

torch.manual_seed(0)
model = torch.nn.Linear(16, 1)
x = torch.randn(256, 16)
y = x.sum(1, keepdim=True)

opt = steadystep.optim.FusedAdamW(model.parameters(), lr=1e-2, weight_decay=0.01, max_grad_norm=1.0)
sched = steadystep.lr_scheduler.WarmupCosineLR(opt, warmup_steps=20, total_steps=200)
for step in range(200):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # norm + guard + update in two passes, no host sync
    sched.step()
print(f"grad norm {opt.last_grad_norm.item():.4g}, skipped {int(opt.skipped_steps)}, lr {sched.get_last_lr()[0]:.3g}")

# Drop-in for torch.nn.utils.clip_grad_norm_, for any optimizer: returns a device tensor.
norm = steadystep.clip_grad_norm_(model.parameters(), max_norm=1.0)
