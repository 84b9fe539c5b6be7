"""Whether two output roots hold the same date partitions, byte for byte: speed never comes from skipping work.

Every output of this pipeline is deterministic (seeded split and models; joblib pickles included), so
two runs of the same dates agree on every byte except where a file names its own output root (the
snapshot path in validation.json); that path is replaced by a placeholder before comparing.
"""

from pathlib import Path

from tasks import partition


def partition_files(root):
    """Every file of every date partition under root, relative to root (locks, staging, failed/ left out)."""
    root = Path(root)
    return sorted(
        path.relative_to(root).as_posix()
        for date in partition.dates_present(root)
        for path in partition.partition_dir(root, date).rglob("*")
        if path.is_file()
    )


def differences(root_a, root_b):
    """(files compared, files missing on one side or differing in content), both lists of relative paths."""
    files_a, files_b = partition_files(root_a), partition_files(root_b)
    differing = sorted(set(files_a) ^ set(files_b))
    for name in sorted(set(files_a) & set(files_b)):
        if _content(root_a, name) != _content(root_b, name):
            differing.append(name)
    return files_a, differing


def _content(root, name):
    return (Path(root) / name).read_bytes().replace(str(root).encode(), b"{output_root}")
