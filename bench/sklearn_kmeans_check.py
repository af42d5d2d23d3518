# Compares our LUTs with scikit-learn KMeans (the LeanQuant reference's k-means, docs/quantization.md §2.2) on
# rows dumped by bench/quant_precision.ts --dump <file.json>. Needs numpy and scikit-learn (Debian:
# apt-get install python3-sklearn, 1.2.1 here). Usage: /usr/bin/python3 bench/sklearn_kmeans_check.py <file.json>
import json, sys, numpy as np, warnings
from sklearn.cluster import KMeans
warnings.filterwarnings("ignore")
d = json.load(open(sys.argv[1]))
def f16(v): return np.float16(v).astype(np.float64)
def err(x, a, lut):
    q = lut[np.argmin(np.abs(lut[None, :] - x[:, None]), axis=1)]
    return float(np.sum(a * (x - q) ** 2))
for e in d:
    R, C, K = e["rows"], e["cols"], 2 ** e["bits"]
    W = np.array(e["W"], dtype=np.float32).reshape(R, C); a = np.array(e["a"], dtype=np.float32)
    g = np.array(e["gpu"]).reshape(R, K)
    tot = {"gpu": 0.0, "sk": 0.0}; same = 0; unused = 0
    for r in range(R):
        x = W[r]
        init = np.linspace(np.min(x), np.max(x), num=K)[:, None]
        km = KMeans(n_clusters=K, init=init, n_init=1, max_iter=100, tol=1e-6, random_state=0).fit(x[:, None], sample_weight=a)
        sk = np.sort(f16(km.cluster_centers_.reshape(-1)))
        tot["sk"] += err(x.astype(np.float64), a, sk); tot["gpu"] += err(x.astype(np.float64), a, g[r])
        same += int(np.array_equal(sk, g[r]))
        lab = np.argmin(np.abs(sk[None, :] - x[:, None]), axis=1); unused += int(len(set(lab)) < K)
    print(f"layer {e['layer']} {e['field']} {e['bits']}-bit: Σa(w−q)² ours/sklearn {tot['gpu']/tot['sk']:.6f}, identical LUTs {same}/{R}, sklearn rows with an unused centre {unused}/{R}")
