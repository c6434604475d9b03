"""Where a training run executes: one device, several GPUs, or several machines.

* No ``TF_CONFIG``: the default strategy on CPU or one GPU, ``MirroredStrategy`` with
  several GPUs (mixed precision on GPUs is set by :func:`leukedge.train.trainer.setup_runtime`).
* ``TF_CONFIG`` in the environment (or ``leukedge train --workers H:P,H:P --worker-index I``,
  which writes it): ``tf.distribute.MultiWorkerMirroredStrategy``, synchronous data-parallel
  training with collective all-reduce over gRPC (ring on CPUs, NCCL between GPUs).

``TrainConfig.batch_size`` is the GLOBAL batch: every step consumes ``batch_size`` images,
each of the ``workers`` workers ``batch_size / workers`` of them, so a run on N workers takes
the same steps over the same global batches as one worker with the same ``batch_size``. The
training data is sharded by element (``AutoShardPolicy.DATA``: every worker reads the
manifest, keeps its share), which is what a list of image paths needs (``FILE`` sharding
needs one file per shard).

Only the chief (task ``chief``, or ``worker`` 0 when the cluster has no chief) writes the run
folder; the other workers write the same checkpoints into a temporary folder that is removed
at the end (all workers must save: reading BatchNorm's synchronised statistics is a collective
operation), as TensorFlow's multi-worker guide does.

Parsing and validating ``TF_CONFIG`` needs no TensorFlow: a malformed one is a one-line
:class:`~leukedge.errors.ConfigError` before anything is imported or created.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from leukedge.errors import ConfigError

log = logging.getLogger("leukedge.train")

ENV = "TF_CONFIG"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_HINT = ('TF_CONFIG must be JSON like {"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
         '"task": {"type": "worker", "index": 0}}')


@dataclass(frozen=True)
class Cluster:
    """A validated multi-worker cluster description.

    Attributes:
        workers: addresses of the training tasks (``chief`` first if there is one, then ``worker``).
        task_type: this process' task type (``chief`` or ``worker``).
        task_index: this process' index within its task type.
        chief_count: 1 when the cluster has a ``chief`` task, else 0.
    """

    workers: tuple[str, ...]
    task_type: str
    task_index: int
    chief_count: int = 0

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def is_chief(self) -> bool:
        """The task that writes the run folder: the chief, or worker 0 when there is no chief."""
        if self.task_type == "chief":
            return True
        return self.chief_count == 0 and self.task_index == 0

    @property
    def rank(self) -> int:
        """Position of this task among all training tasks (chief 0)."""
        return self.task_index if self.task_type == "chief" else self.chief_count + self.task_index


def _check_address(addr, where: str) -> str:
    if not isinstance(addr, str) or not _ADDRESS.match(addr) or not 0 < int(addr.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"{ENV}: {where} address {addr!r} is not host:port", _HINT)
    return addr


def parse_tf_config(text: str) -> Cluster:
    """Validate a ``TF_CONFIG`` string; returns the :class:`Cluster` (one-line errors otherwise)."""
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ENV} is not valid JSON ({exc.msg} at character {exc.pos})", _HINT) from None
    if not isinstance(conf, dict):
        raise ConfigError(f"{ENV} must be a JSON object, got {type(conf).__name__}", _HINT)
    cluster, task = conf.get("cluster"), conf.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{ENV} has no \"cluster\" object", _HINT)
    if not isinstance(task, dict):
        raise ConfigError(f"{ENV} has no \"task\" object", _HINT)
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise ConfigError(f"{ENV}: task type(s) {unsupported} are not supported by MultiWorkerMirroredStrategy",
                          "use only \"chief\" (optional, at most one) and \"worker\" (parameter servers and "
                          "evaluators belong to other strategies)")
    lists = {}
    for kind in ("chief", "worker"):
        addrs = cluster.get(kind, [])
        if not isinstance(addrs, list):
            raise ConfigError(f"{ENV}: cluster.{kind} must be a list of \"host:port\" strings", _HINT)
        lists[kind] = [_check_address(a, f"cluster.{kind}[{i}]") for i, a in enumerate(addrs)]
    if len(lists["chief"]) > 1:
        raise ConfigError(f"{ENV}: at most one chief, got {len(lists['chief'])}", _HINT)
    everyone = lists["chief"] + lists["worker"]
    if not everyone:
        raise ConfigError(f"{ENV}: the cluster lists no chief or worker", _HINT)
    dup = sorted({a for a in everyone if everyone.count(a) > 1})
    if dup:
        raise ConfigError(f"{ENV}: address(es) {dup} listed twice", "every task needs its own host:port")
    ttype, tindex = task.get("type"), task.get("index", 0)
    if ttype not in ("chief", "worker"):
        raise ConfigError(f"{ENV}: task.type must be \"chief\" or \"worker\", got {ttype!r}", _HINT)
    if isinstance(tindex, bool) or not isinstance(tindex, int):
        raise ConfigError(f"{ENV}: task.index must be an integer, got {tindex!r}", _HINT)
    if not 0 <= tindex < len(lists[ttype]):
        raise ConfigError(f"{ENV}: task {ttype} {tindex} is not in the cluster ({len(lists[ttype])} {ttype} "
                          f"address(es))", "task.index counts from 0 within its type")
    return Cluster(tuple(everyone), ttype, tindex, chief_count=len(lists["chief"]))


def tf_config_for(workers: str, index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of ``--workers "h0:p0,h1:p1,..."`` (validated)."""
    addrs = [a.strip() for a in str(workers).split(",") if a.strip()]
    if not addrs:
        raise ConfigError("--workers expects a comma-separated list of host:port", "e.g. --workers node0:2222,node1:2222")
    if index is None:
        raise ConfigError("--workers needs --worker-index (this process' position in the list, from 0)")
    text = json.dumps({"cluster": {"worker": addrs}, "task": {"type": "worker", "index": int(index)}})
    parse_tf_config(text)
    return text


def cluster_from_env(environ=None) -> Cluster | None:
    """The cluster of ``TF_CONFIG`` (validated), or None when it is unset or empty."""
    text = (environ if environ is not None else os.environ).get(ENV, "").strip()
    return parse_tf_config(text) if text else None


def check_batch(batch_size: int, cluster: Cluster | None) -> None:
    """The global batch must split evenly over the workers."""
    if cluster and batch_size % cluster.n_workers:
        raise ConfigError(f"batch_size {batch_size} (the global batch) does not split over {cluster.n_workers} workers",
                          f"use a multiple of {cluster.n_workers} (each worker takes batch_size / workers)")


def make_strategy(cluster: Cluster | None):
    """``MultiWorkerMirroredStrategy`` for a cluster, else MirroredStrategy (>1 GPU) or the default.

    Must run before any other TensorFlow op of the process (collective ops are configured at
    start-up), i.e. before datasets or models are built.
    """
    import tensorflow as tf

    if cluster is not None:
        log.info("multi-worker training: %d workers, this is %s %d%s", cluster.n_workers, cluster.task_type,
                 cluster.task_index, " (chief: writes the run folder)" if cluster.is_chief else "")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        log.info("%d GPUs: MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def shard_by_data(dataset):
    """Element-wise auto-sharding (``AutoShardPolicy.DATA``) for a dataset of image paths."""
    import tensorflow as tf

    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(opts)
