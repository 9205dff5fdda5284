#!/usr/bin/python3
"""Writes the commit script and its three variants into a directory (default: the current one), for bench.py.

The commit script is read from src/GrpcBoard.Store.Redis/Scripts.cs (Scripts.Commit), so there is no copy of it to
go stale; each variant is one edit of it, and the edit must apply or this stops.
    /usr/bin/python3 variants.py /tmp/lua && /usr/bin/python3 bench.py /tmp/lua/commit.lua 3000
"""
import os, re, sys

here = os.path.dirname(os.path.abspath(__file__))
source = os.path.join(here, '..', '..', '..', '..', '..', 'src', 'GrpcBoard.Store.Redis', 'Scripts.cs')
out = sys.argv[1] if len(sys.argv) > 1 else '.'
commit = re.search(r'public const string Commit = """\n(.*?)\n\s*""";', open(source).read(), re.S).group(1)

# What every early return must still do, so that the next call's expected batch id matches.
commit_meta = "redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', me, 'wt', since, 'we', now + tonumber(ARGV[8]))\n"
early_return = commit_meta + " do return {1, tonumber(ARGV[3]), -1, -1} end"
unpack = "local batch = cmsgpack.unpack(ARGV[6])"

def edit(text, old, new):
    if old not in text:
        sys.exit(f'variants.py: the commit script no longer has {old!r}: update this edit')
    return text.replace(old, new)

variants = {
    'commit.lua': commit,
    # Returns before unpacking the batch: what the script costs with nothing to write.
    'v_none.lua': edit(commit, unpack, early_return + '\n ' + unpack),
    # Returns right after unpacking it.
    'v_unpack.lua': edit(commit, unpack, unpack + '\n ' + early_return),
    # The count fields (op C) go into the final meta HSET instead of an HSET of their own.
    'v_merge.lua': edit(edit(edit(commit,
        "          elseif code == 'C' then\n            redis.call('HSET', meta, unpack(op, 2))",
        "          elseif code == 'C' then\n            counts = op"),
        "local before = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')",
        "local before = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')\n        local counts = false"),
        "          " + commit_meta + "        end",
        "          if counts then\n            " + commit_meta.rstrip('\n')[:-1] + ", unpack(counts, 2))\n"
        "          else\n            " + commit_meta + "          end\n        end"),
}
os.makedirs(out, exist_ok=True)
for name, text in variants.items():
    with open(os.path.join(out, name), 'w') as f:
        f.write(text)
print('wrote', ', '.join(variants), 'to', out)
