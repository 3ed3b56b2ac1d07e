#!/usr/bin/env python3
"""Writes a recipe of about N lines in the canonical layout, for timing `ahtsgd check`:
groups of a model, a schedule, an optimizer and an experiment (30 lines a group), as
`ahtsgd bench`'s check workloads use.

    python3 scripts/big-recipe.py 16000 > /tmp/r16k.aht
    python3 scripts/big-recipe.py 64000 > /tmp/r64k.aht
    /usr/bin/time -v ahtsgd check /tmp/r64k.aht    # seconds and maximum resident set size
"""
import sys

GROUP = """# group {i}
model m{i} = mlp {{
  hidden = [{w}, 16]
  activation = relu
  init = kaiming
}}

schedule s{i} = adaptive {{
  sharpness = power_iteration {{ iters = 10, every = 25 steps }}
  ema = 0.05
  map = sigmoid {{ v = 4, c = log(1 / lr) }}
}}

optimizer o{i} = ahtsgd {{
  lr = 0.01 * {k}
  sigma = 0.01
  alpha = s{i}
  clip = coordinate(1.0)
}}

experiment e{i} {{
  data = blobs {{ classes = 3 }}
  model = m{i}
  optimizer = o{i}
  epochs = 2
  batch = 64
  seed = sweep(0..3)
}}

"""


def main():
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 16000
    per = GROUP.count("\n")
    out = sys.stdout
    for i in range(lines // per):
        out.write(GROUP.format(i=i, w=8 + i, k=1 + i % 5))
    for _ in range(lines % per):
        out.write("# padding\n")


if __name__ == "__main__":
    main()
