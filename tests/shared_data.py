"""Where the shared data beside the checkout lives (never copied into the repository)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared/data beside the checkout; $TFGEO_SHARED_DATA overrides it (e.g. for
# Bazel, whose runfiles tree is not beside the checkout).
SHARED = os.environ.get("TFGEO_SHARED_DATA") or os.path.join(os.path.dirname(ROOT), "shared",
                                                             "data")
MNIST = os.path.join(SHARED, "mnist")
CIFAR10_ARCHIVE = os.path.join(SHARED, "cifar10_jpg.tar.gz")


def cifar10_slice(folder, train_per_class: int, test_per_class: int) -> str:
    """Writes `folder/cifar10_slice.tar.gz`: the first (by file name)
    `train_per_class` / `test_per_class` images of each class of the shared
    CIFAR-10 JPEG archive, in the archive's own layout; returns its path."""
    import tarfile

    quota = {"train": train_per_class, "test": test_per_class}
    with tarfile.open(CIFAR10_ARCHIVE, "r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    chosen, wanted = {}, set()
    for name in names:
        split, label = name.split("/")[-3:-1]
        if len(chosen.setdefault((split, label), [])) < quota[split]:
            chosen[(split, label)].append(name)
            wanted.add(name)
    path = os.path.join(str(folder), "cifar10_slice.tar.gz")
    # One streaming pass: a gzip stream cannot seek back cheaply.
    with tarfile.open(CIFAR10_ARCHIVE, "r|gz") as tar, tarfile.open(path, "w:gz") as out:
        for member in tar:
            if member.name in wanted:
                out.addfile(member, tar.extractfile(member))
    return path
