"""Split ("sharded") GGUF files in llama.cpp's gguf-split layout, written with gguf-py for the
tests: every shard carries split.no (u16, from 0), split.count (u16) and split.tensors.count
(i32, the tensors of all shards) - the types of llama.cpp's gguf-split.cpp -, the first holds
all the other metadata, and the files are named <prefix>-%05d-of-%05d.gguf."""
from pathlib import Path

import gguf

SPLIT_TYPES = {"split.no": gguf.GGUFValueType.UINT16, "split.count": gguf.GGUFValueType.UINT16,
               "split.tensors.count": gguf.GGUFValueType.INT32}


def _copy_metadata(reader, writer):
    """Every metadata entry of reader but the ones GGUFWriter writes itself."""
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def _arch(reader):
    return reader.fields[gguf.Keys.General.ARCHITECTURE].contents()


def split_with_gguf_py(src, base, max_tensors, small_first_shard=False):
    """src split by gguf-py's writer into shards of at most max_tensors tensors named from base
    (dir/name.gguf -> dir/name-00001-of-0000N.gguf ...); returns their paths."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(base, _arch(r), split_max_tensors=max_tensors, small_first_shard=small_first_shard)
    _copy_metadata(r, w)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    paths = w.format_shard_names(Path(base))
    assert len(paths) > 1 and all(p.is_file() for p in paths)
    return paths


def write_shards(src, paths, groups, keys=None):
    """Writes src's model as shard files paths[i] holding the tensors of src numbered groups[i]
    (a tensor may be listed twice), the first with all the metadata. Each shard gets split.no
    i, split.count len(paths) and split.tensors.count (the tensors of all groups); keys[i]
    overrides them for shard i (value None: leave the key out)."""
    r = gguf.GGUFReader(src)
    total = sum(len(g) for g in groups)
    for i, (path, group) in enumerate(zip(paths, groups)):
        w = gguf.GGUFWriter(path, _arch(r))
        if i == 0:
            _copy_metadata(r, w)
        else:
            w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE)  # metadata in the first shard only
        kv = {"split.no": i, "split.count": len(paths), "split.tensors.count": total}
        kv.update((keys or {}).get(i, {}))
        for k, v in kv.items():
            if v is not None:
                w.add_key_value(k, v, SPLIT_TYPES[k])
        for j in group:
            t = r.tensors[j]
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return [Path(p) for p in paths]


def thirds(n):
    """Tensor numbers 0..n-1 in three consecutive groups."""
    a, b = n // 3, 2 * n // 3
    return [list(range(0, a)), list(range(a, b)), list(range(b, n))]


def shard_names(d, prefix, n):
    return [d / f"{prefix}-{i + 1:05d}-of-{n:05d}.gguf" for i in range(n)]


def split_file(src, directory, n, prefix="model"):
    """src as n shards in directory, its tensors in n consecutive groups."""
    count = len(gguf.GGUFReader(src).tensors)
    step = -(-count // n)
    groups = [list(range(i * step, min(count, (i + 1) * step))) for i in range(n)]
    return write_shards(src, shard_names(Path(directory), prefix, n), groups)
