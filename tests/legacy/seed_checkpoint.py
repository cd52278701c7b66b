"""Writes checkpoints of the seed's training graph in one process, in seconds.

The graph is the seed's own (tests/legacy/trainer/mnist.py: get_model and
get_trainer, Adam included) built with tf.compat.v1, trained a few steps on random
data so that every weight and Adam slot holds a value of its own, and saved by a
tf.compat.v1 Saver under the graph's names, as the seed's Supervisor saved it.
`drop` and `replace` make the broken checkpoints a migration must refuse.
"""

import numpy as np
import tensorflow as tf

from tests.legacy.trainer import mnist as seed_mnist


def write_seed_checkpoint(prefix: str, *, steps: int = 3, optimizer: bool = True,
                          drop: tuple = (), replace: dict | None = None,
                          seed: int = 0) -> dict:
  """Saves the seed's variables after `steps` Adam steps to `prefix`; returns them.

  `optimizer` False: the network and the global step only, untrained (quicker).
  `drop`: names left out. `replace`: {name: numpy value} saved under that name
  instead of the graph's variable (a wrong shape, or an extra name). Returns
  {name: value} of everything saved.
  """
  rng = np.random.default_rng(seed)
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    tf.compat.v1.set_random_seed(seed)
    x = tf.compat.v1.placeholder(tf.float32, [None, 784])
    t = tf.compat.v1.placeholder(tf.float32, [None, 10])
    global_step = tf.compat.v1.Variable(0, trainable=False)
    p = seed_mnist.get_model(x, 1.0, training=True)
    if optimizer:
      train_step, _, _ = seed_mnist.get_trainer(p, t, global_step)
    sess.run(tf.compat.v1.global_variables_initializer())
    for _ in range(steps if optimizer else 0):
      labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
      sess.run(train_step, {x: rng.random((16, 784), np.float32), t: labels})
    var_list = {v.op.name: v for v in tf.compat.v1.global_variables()}
    for name in drop:
      del var_list[name]
    for name, value in (replace or {}).items():
      var_list[name] = tf.compat.v1.Variable(value, name="replaced")
      sess.run(var_list[name].initializer)
    tf.compat.v1.train.Saver(var_list=var_list).save(sess, prefix)
    return {name: sess.run(v) for name, v in var_list.items()}
