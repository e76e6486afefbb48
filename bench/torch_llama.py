"""PyTorch reference for the train-step and kd-step benchmarks: the same
LLaMA-style model, config, batch and optimiser as qkd's bench/train-step.ts
and bench/kd-step.ts, timed the same way (median of N steps after a warm-up).
Usage: python3 bench/torch_llama.py train-step|kd-step [steps]. Prints one JSON line."""
import json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, C, H, G, I, eps):
        super().__init__()
        self.H, self.G, self.D, self.eps = H, G, C // H, eps
        self.input_layernorm = nn.Parameter(torch.ones(C))
        self.post_attention_layernorm = nn.Parameter(torch.ones(C))
        self.q = nn.Linear(C, H * self.D, bias=False)
        self.k = nn.Linear(C, G * self.D, bias=False)
        self.v = nn.Linear(C, G * self.D, bias=False)
        self.o = nn.Linear(H * self.D, C, bias=False)
        self.gate = nn.Linear(C, I, bias=False)
        self.up = nn.Linear(C, I, bias=False)
        self.down = nn.Linear(I, C, bias=False)

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        h = self.norm(x, self.input_layernorm)
        q = self.q(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k(h).view(B, T, self.G, self.D).transpose(1, 2)
        v = self.v(h).view(B, T, self.G, self.D).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if self.G != self.H:
            k = k.repeat_interleave(self.H // self.G, dim=1)
            v = v.repeat_interleave(self.H // self.G, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.D)
        att = att.masked_fill(mask, float('-inf')).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.o(y)
        h = self.norm(x, self.post_attention_layernorm)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Llama(nn.Module):
    def __init__(self, V, C, L, H, G, I, eps=1e-5, theta=10000.0, T=256):
        super().__init__()
        self.embed = nn.Embedding(V, C)
        self.layers = nn.ModuleList([Block(C, H, G, I, eps) for _ in range(L)])
        self.norm = nn.Parameter(torch.ones(C))
        self.lm_head = nn.Linear(C, V, bias=False)
        self.eps = eps
        D = C // H
        inv = theta ** (-torch.arange(0, D, 2).float() / D)
        ang = torch.arange(T).float()[:, None] * inv[None, :]
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer('cos', ang.cos())
        self.register_buffer('sin', ang.sin())
        self.register_buffer('mask', torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

    def forward(self, ids):
        T = ids.shape[1]
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, self.cos[:T], self.sin[:T], self.mask[:T, :T])
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm
        return self.lm_head(x)


def median_time(fn, steps):
    fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def train_corpus():
    """Reference config on the corpus: 90/10 byte split, random windows,
    warm-up + cosine, grad clip 1.0, AdamW; validation on the first 8
    sequential batches of the held-out tail (as qkd's trainer)."""
    steps, path = int(sys.argv[2]), sys.argv[3]
    lr, min_lr, warmup = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    B, T, V = 8, 256, 256
    data = torch.tensor(list(open(path, 'rb').read()), dtype=torch.long)
    cut = int(len(data) * 0.9)
    train_tokens, val_tokens = data[:cut], data[cut:]
    model = Llama(V, 256, 6, 8, 8, 704)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    g = torch.Generator().manual_seed(1338)

    def lr_at(step):
        if step <= warmup:
            return lr * step / max(1, warmup)
        p = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))

    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train_tokens) - T, (B,), generator=g)
        x = torch.stack([train_tokens[s:s + T] for s in starts])
        y = torch.stack([train_tokens[s + 1:s + T + 1] for s in starts])
        for group in opt.param_groups:
            group['lr'] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).view(-1, V), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - t0
    total, n = 0.0, 0
    with torch.no_grad():
        for b in range(8):
            first = b * B
            if (first + B) * T + 1 > len(val_tokens):
                break
            x = torch.stack([val_tokens[(first + i) * T:(first + i + 1) * T] for i in range(B)])
            y = torch.stack([val_tokens[(first + i) * T + 1:(first + i + 1) * T + 1] for i in range(B)])
            total += F.cross_entropy(model(x).view(-1, V), y.view(-1)).item()
            n += 1
    val = total / n
    print(json.dumps({'name': 'train-corpus', 'val_loss': val, 'val_ppl': math.exp(val), 'tokens_per_s': steps * B * T / seconds, 'threads': torch.get_num_threads(), 'torch': torch.__version__}))


def main():
    which = sys.argv[1]
    if which == 'train-corpus':
        return train_corpus()
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    B, T, V = 8, 256, 256
    student = Llama(V, 256, 6 if which == 'train-step' else 3, 8, 8, 704)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    ids = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    teacher = None
    if which == 'kd-step':
        teacher = Llama(V, 512, 6, 8, 8, 704)
        teacher.requires_grad_(False)
        teacher.eval()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = student(ids)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(ids)
            tau = 4.0
            kl = F.kl_div(F.log_softmax(logits.view(-1, V) / tau, -1), F.log_softmax(t_logits.view(-1, V) / tau, -1), log_target=True, reduction='batchmean')
            loss = loss + 0.5 * tau * tau * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()

    seconds = median_time(step, steps)
    params = sum(p.numel() for p in student.parameters())
    print(json.dumps({'name': which, 'params': params, 'tokens_per_s': B * T / seconds, 'ms_per_step': seconds * 1000, 'threads': torch.get_num_threads(), 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
