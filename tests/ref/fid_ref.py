"""fid_ref.py: the oracle for tests/test_fid.c (run with /usr/bin/python3: numpy and scipy from Debian).

  fid A1.npz B1.npz [A2.npz B2.npz ...]
      For each pair of statistics files: one line
      "pytorch_fid <value> eigh <value> retry <0|1> complex <0|1>", where pytorch_fid is pytorch-fid's
      calculate_frechet_distance (below, as in pytorch_fid/fid_score.py), eigh the same distance through the
      symmetric eigenproblem in numpy, retry whether sqrtm was not finite and pytorch-fid added 1e-6 to the
      diagonals, complex whether sqrtm came back complex (pytorch-fid keeps the real part).
  cov FEATS.npy OUT.npz
      np.mean(x, axis=0) and np.cov(x, rowvar=False) of the float32 features, in float64, as np.savez.
  make DIR D
      Writes .npz files with known values (see `known`) as numpy writes them, and bad ones, into DIR.
  check FILE.npz FILE.npy D
      Checks a C-written statistics file (keys mu, sigma, n; float64, int64; shapes; values exactly `known`)
      and a C-written float64 .npy; prints "ok" or exits 1 with the reason.
"""
import struct
import sys
import zipfile

import numpy as np
from scipy import linalg


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's function (pytorch_fid/fid_score.py), returning also whether it retried and was complex."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    retry = not np.isfinite(covmean).all()
    if retry:
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    cplx = np.iscomplexobj(covmean)
    if cplx:
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    fid = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean
    return fid, retry, cplx


def eigh_distance(mu1, sigma1, mu2, sigma2):
    """The same distance as the C code computes it: tr sqrt(S1 S2) = sum sqrt eig(S1^1/2 S2 S1^1/2)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    c = v * np.sqrt(np.clip(w, 0, None))
    m = c.T @ ((sigma2 + sigma2.T) / 2) @ c
    lam = np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(lam).sum()


def known(d):
    """The values of the npz round-trip tests: mu[i] = i/2 - 1/3, sigma[i, j] = 1/(1 + i + j) + (i == j)."""
    i = np.arange(d, dtype=np.float64)
    mu = 0.5 * i - 1 / 3
    sigma = 1 / (1 + np.add.outer(i, i)) + np.eye(d)
    return mu, sigma


def cmd_fid(paths):
    for a, b in zip(paths[0::2], paths[1::2]):
        with np.load(a) as fa, np.load(b) as fb:
            m1, s1, m2, s2 = fa["mu"], fa["sigma"], fb["mu"], fb["sigma"]
        fid, retry, cplx = calculate_frechet_distance(m1, s1, m2, s2)
        print("pytorch_fid %.17g eigh %.17g retry %d complex %d" %
              (fid, eigh_distance(m1, s1, m2, s2), retry, cplx))


def cmd_cov(feats, out):
    x = np.load(feats)
    assert x.dtype == np.float32 and x.ndim == 2
    np.savez(out, mu=np.mean(x.astype(np.float64), axis=0), sigma=np.cov(x, rowvar=False))


def cmd_make(d, n):
    mu, sigma = known(n)
    np.savez(d + "/savez.npz", mu=mu, sigma=sigma, n=np.int64(12345))
    np.savez_compressed(d + "/compressed.npz", mu=mu, sigma=sigma)
    np.savez(d + "/f32.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    np.savez(d + "/missing_sigma.npz", mu=mu)
    np.savez(d + "/wrong_shape.npz", mu=mu, sigma=np.zeros((n, n + 1)))
    np.savez(d + "/mu_2d.npz", mu=mu[None, :], sigma=sigma)
    np.savez(d + "/int_sigma.npz", mu=mu, sigma=np.ones((n, n), dtype=np.int64))
    bad = sigma.copy()
    bad[1, 2] = np.nan
    np.savez(d + "/nan.npz", mu=mu, sigma=bad)
    with open(d + "/savez.npz", "rb") as f:
        whole = f.read()
    with open(d + "/truncated.npz", "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(d + "/not_zip.npz", "wb") as f:
        f.write(b"mu,sigma\n1,2\n")
    # a stored member whose data no longer matches its CRC
    with zipfile.ZipFile(d + "/savez.npz") as z:
        off = z.getinfo("sigma.npy").header_offset
    name_len, extra_len = struct.unpack("<HH", whole[off + 26:off + 30])  # from the local file header
    corrupt = bytearray(whole)
    corrupt[off + 30 + name_len + extra_len + 200] ^= 0x55
    with open(d + "/bad_crc.npz", "wb") as f:
        f.write(bytes(corrupt))
    # a member that is not .npy at all
    with zipfile.ZipFile(d + "/not_npy.npz", "w") as z:
        z.writestr("mu.npy", b"hello")
        z.writestr("sigma.npy", b"world")


def cmd_check(npz, npy, n):
    mu, sigma = known(n)
    with np.load(npz) as f:
        keys = sorted(f.files)
        if keys != ["mu", "n", "sigma"]:
            sys.exit("keys %s, expected mu, n, sigma" % keys)
        m, s, cnt = f["mu"], f["sigma"], f["n"]
    for name, a, dt, shape in (("mu", m, np.float64, (n,)), ("sigma", s, np.float64, (n, n)),
                               ("n", cnt, np.int64, ())):
        if a.dtype != dt or a.shape != shape:
            sys.exit("%s: %s %s, expected %s %s" % (name, a.dtype, a.shape, np.dtype(dt), shape))
    if not (np.array_equal(m, mu) and np.array_equal(s, sigma) and int(cnt) == 777):
        sys.exit("values differ: max |d| mu %g sigma %g, n %d" % (np.abs(m - mu).max(), np.abs(s - sigma).max(),
                                                                int(cnt)))
    a = np.load(npy)
    if a.dtype != np.float64 or a.shape != (n, n) or not np.array_equal(a, sigma):
        sys.exit("%s: %s %s or values differ" % (npy, a.dtype, a.shape))
    print("ok")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fid":
        cmd_fid(args)
    elif cmd == "cov":
        cmd_cov(args[0], args[1])
    elif cmd == "make":
        cmd_make(args[0], int(args[1]))
    elif cmd == "check":
        cmd_check(args[0], args[1], int(args[2]))
    else:
        sys.exit("unknown command " + cmd)
