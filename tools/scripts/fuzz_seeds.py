#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from an `annals export` of a
small bank store, plus hand-written inputs. Usage: fuzz_seeds.py EXPORT_FILE OUT_DIR

Each seed follows its target's input layout (fuzz/<target>.cpp): a mode or pick byte, then
length-prefixed fields, then the rest."""
import base64, json, os, sys

export_path, out = sys.argv[1], sys.argv[2]
lines = open(export_path, 'rb').read().splitlines(keepends=True)
events, schemas = [], []
for line in lines:
    obj = json.loads(line)
    if 'event' in obj:
        events.append(obj['event'])
    elif 'schema' in obj:
        schemas.append(obj['schema'])

seeds = {t: [] for t in ['fuzz_import', 'fuzz_metadata', 'fuzz_payload', 'fuzz_upcast',
                         'fuzz_snapshot', 'fuzz_bank_args', 'fuzz_compat', 'fuzz_stream_name']}
whole = b''.join(lines)
seeds['fuzz_import'] += [whole, b''.join(lines[:3]), whole[:len(whole) // 2],
                         b''.join(l for l in lines if b'"schema"' not in l)]
for e in events:
    meta = base64.b64decode(e.get('metadata_bytes', ''))
    payload = base64.b64decode(e.get('payload', ''))
    seeds['fuzz_metadata'].append(meta)
    for mode in range(0, 26, 2):
        seeds['fuzz_payload'].append(bytes([mode, 1]) + payload)
    seeds['fuzz_snapshot'].append(bytes([3]) + payload)
    seeds['fuzz_upcast'].append(bytes([1, 1]) + payload)
for s in schemas:
    ds = base64.b64decode(s['descriptor_set'])
    t = s['type'].encode()
    seeds['fuzz_payload'].append(bytes([1, len(t)]) + t + bytes([min(255, (len(ds) + 7) // 8)]) + ds)
    seeds['fuzz_compat'].append(bytes([len(seeds['fuzz_compat']), len(t)]) + t + ds)
# bank.v1.AccountOpened{account_id:"a1", owner:"Ada Lovelace"} at versions 1 and unknown.
v1_open = b'\x0a\x02a1\x12\x0cAda Lovelace'
seeds['fuzz_upcast'] += [bytes([0, 1]) + v1_open, bytes([0, 0]) + v1_open, bytes([0x10, 1]) + v1_open,
                         bytes([3, 21]) + b'bank.v1.AccountOpened' + bytes([2]) + v1_open]
seeds['fuzz_bank_args'] += [b'12.50', b'0.01', b'12', b'12.5', b'92233720368547758.07', b'-1', b'1e3',
                            b'a1', b'acct_42-x', b'completed', b'requested', b'failed',
                            b'01a242ce-d8c0-735a-b8bc-44a5ae1d487a']
seeds['fuzz_stream_name'] += [b'account-a1', b'transfer-01a242ce', b'\xc3\xbcn\xc3\xafc\xc3\xb8d\xc3\xa9',
                              b'a\x00b', b'../../etc/passwd', b'a.b*c>', b"x'; DROP TABLE events;--",
                              b'\xff\xfe', b'$all', b' ']
for target, items in seeds.items():
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(items):
        with open(os.path.join(d, f'seed-{i:03d}'), 'wb') as f:
            f.write(data)
    print(f'{target}: {len(items)} seeds')
