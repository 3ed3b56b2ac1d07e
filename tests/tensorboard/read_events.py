"""Reads TensorBoard event files with the official `tensorboard` package and prints JSON.

Usage: python read_events.py LOGDIR

For every run (a folder holding an events file) it prints the scalars as TensorBoard's
EventAccumulator loads them, and the HParams plugin's summaries parsed with the plugin's own
protocol buffers: {"runs": {run: {"scalars": {tag: [[step, value], ...]}, "hparams": {...},
"group": str, "status": int}}, "experiment": {"hparams": {name: type}, "metrics": [tag]}}.
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2


def main(logdir):
    out = {"runs": {}, "experiment": None}
    for root, _dirs, files in sorted(os.walk(logdir)):
        events = sorted(f for f in files if "tfevents" in f)
        if not events:
            continue
        run = os.path.relpath(root, logdir)
        acc = event_accumulator.EventAccumulator(root, size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {
            tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
        }
        info = {"scalars": scalars, "hparams": None, "group": None, "status": None}
        for name in events:
            for ev in event_file_loader.EventFileLoader(os.path.join(root, name)).Load():
                for v in ev.summary.value:
                    if v.metadata.plugin_data.plugin_name != "hparams":
                        continue
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        v.metadata.plugin_data.content
                    )
                    kind = data.WhichOneof("data")
                    if kind == "session_start_info":
                        s = data.session_start_info
                        info["hparams"] = {
                            k: getattr(val, val.WhichOneof("kind")) for k, val in s.hparams.items()
                        }
                        info["group"] = s.group_name
                    elif kind == "session_end_info":
                        info["status"] = data.session_end_info.status
                    elif kind == "experiment":
                        e = data.experiment
                        out["experiment"] = {
                            "hparams": {
                                h.name: api_pb2.DataType.Name(h.type) for h in e.hparam_infos
                            },
                            "metrics": [m.name.tag for m in e.metric_infos],
                        }
        if run != "." or scalars:
            out["runs"][run] = info
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
