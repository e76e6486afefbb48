"""PyTorch reference for `npm run bench -- audit --grid`: the data-free metrics of
`qkd audit` (excess kurtosis, spectral concentration from a randomised SVD, noise
amplification from Gaussian probes, RTN reconstruction error) for every tensor of a
safetensors file (F32, F16, BF16) or a GGUF file (F32, F16, BF16, Q8_0), as a plain
implementation would compute them. The bench times the whole process, start-up
included, as a user would see it.
Usage: python3 bench/torch_audit.py FILE BITS PROBES MAXRANK. Prints one JSON line."""
import json, math, struct, sys, time
t_start = time.perf_counter()
import numpy as np
import torch

torch.set_num_threads(2)
torch.manual_seed(0)
path, bits, probes, max_rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def safetensors_tensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, end = e['data_offsets']
        raw = data[b:end]
        if e['dtype'] == 'F32':
            w = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())
        elif e['dtype'] == 'F16':
            w = torch.from_numpy(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
        elif e['dtype'] == 'BF16':
            w = torch.from_numpy((np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32))
        else:
            raise SystemExit(f'unsupported dtype {e["dtype"]}')
        yield name, w.reshape(e['shape'])


def gguf_tensors(path):
    with open(path, 'rb') as f:
        buf = f.read(64 << 20)  # the header fits easily
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from('<' + fmt, buf, pos)
        pos += struct.calcsize('<' + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take('Q')
        s = buf[pos:pos + n].decode('utf8')
        pos += n
        return s

    scalar = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            inner, n = take('I'), take('Q')
            return [value(inner) for _ in range(n)]
        return take(scalar[t])

    assert buf[:4] == b'GGUF', 'not a GGUF file'
    pos = 4
    take('I')
    n_tensors, n_kv = take('Q'), take('Q')
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take('I'))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take('Q') for _ in range(take('I'))]
        infos.append((name, dims[::-1], take('I'), take('Q')))
    align = meta.get('general.alignment', 32)
    base = (pos + align - 1) // align * align
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=base)
    for name, shape, typ, off in infos:
        count = int(np.prod(shape))
        if typ == 0:
            w = np.frombuffer(data[off:off + 4 * count], dtype=np.float32).copy()
        elif typ == 1:
            w = np.frombuffer(data[off:off + 2 * count], dtype=np.float16).astype(np.float32)
        elif typ == 30:
            w = (np.frombuffer(data[off:off + 2 * count], dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif typ == 8:  # Q8_0: blocks of an f16 scale and 32 int8 values
            blocks = np.frombuffer(data[off:off + 34 * (count // 32)], dtype=np.uint8).reshape(-1, 34)
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
            w = (d * q).reshape(-1)
        else:
            raise SystemExit(f'unsupported ggml type {typ} ({name})')
        yield name, torch.from_numpy(w).reshape(shape)


def metrics(w):
    wd = w.double().flatten()
    d = wd - wd.mean()
    m2 = (d * d).mean()
    m4 = (d ** 4).mean()
    kurt = (m4 / (m2 * m2) - 3).item()
    if w.dim() < 2:
        return
    rows, cols = w.shape
    fro2 = (wd * wd).sum().item()
    p = min(rows, cols)
    k = min(max(1, math.ceil(0.1 * p)), max_rank)
    sv = torch.svd_lowrank(w, q=min(p, k + max(8, k)), niter=2)[1]
    top = (sv[:k].double() ** 2).sum().item()
    lo = w.min(dim=1).values
    hi = w.max(dim=1).values
    steps = (hi - lo) / (2 ** bits - 1)
    x = torch.randn(cols, probes)
    wx = (w @ x).double().pow(2).sum(0)
    ex = ((steps.double()[:, None] * x.double().pow(2).sum(0).div(12).sqrt()[None, :]) * torch.randn(rows, probes, dtype=torch.float64)).pow(2).sum(0)
    noise = (ex / wx).sqrt().mean().item()
    scale = torch.where(steps > 0, steps, torch.ones_like(steps))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, 2 ** bits - 1)
    err = ((q - zero[:, None]) * scale[:, None] - w).double().pow(2).sum().item()
    return kurt, top / fro2, noise, math.sqrt(err / fro2)


t0 = time.perf_counter()
params = tensors = 0
for name, w in (gguf_tensors(path) if path.endswith('.gguf') else safetensors_tensors(path)):
    params += w.numel()
    tensors += 1
    metrics(w)
print(json.dumps({'params': params, 'tensors': tensors, 'metrics_s': time.perf_counter() - t0, 'startup_s': t0 - t_start, 'torch': torch.__version__}))
