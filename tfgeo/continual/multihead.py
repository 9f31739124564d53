"""Task-incremental heads for any network: one network, one C-way head per task, chosen by a task id.

    net = multi_head(models.get("mlp", shape, num_tasks * C), num_tasks, C)
    logits = net({"x": images, "task": task_ids})   # [N, C], head task_ids[i] for row i

The body's last layer emits all heads' logits ([N, T*C]); `SelectHead`
picks each example's own head, so a loss or a metric on the output only
sees (and only moves) that head and the shared body. With one task it is a
plain shared head (domain-incremental).
"""
from __future__ import annotations

import keras

INPUTS = "x"
TASK = "task"


@keras.saving.register_keras_serializable(package="tfgeo")
class SelectHead(keras.layers.Layer):
    """[N, T*C] logits and [N] task ids -> [N, C]: row i's slice for its task."""

    def __init__(self, num_tasks: int, classes_per_task: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.classes_per_task = int(num_tasks), int(classes_per_task)

    def call(self, logits, task):
        heads = keras.ops.reshape(logits, (-1, self.num_tasks, self.classes_per_task))
        index = keras.ops.reshape(keras.ops.cast(task, "int32"), (-1, 1, 1))
        return keras.ops.squeeze(keras.ops.take_along_axis(heads, index, axis=1), axis=1)

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks,
                "classes_per_task": self.classes_per_task}


def multi_head(body: keras.Model, num_tasks: int, classes_per_task: int,
               name: str = "multi_head", input_shape=None) -> keras.Model:
    """Wraps `body` (outputs [N, num_tasks * classes_per_task]) with task-id inputs.
    `input_shape` (without the batch) defaults to the body's; a subclassed body,
    which states none, needs it."""
    if num_tasks < 1 or classes_per_task < 2:
        raise ValueError(f"need num_tasks >= 1 and classes_per_task >= 2, got "
                         f"{num_tasks}, {classes_per_task}.")
    x = keras.Input(tuple(input_shape) if input_shape is not None else body.input_shape[1:],
                    name=INPUTS)
    features = body(x)
    outputs = int(features.shape[-1])
    if outputs != num_tasks * classes_per_task:
        raise ValueError(f"body has {outputs} outputs; {num_tasks} heads of "
                         f"{classes_per_task} need {num_tasks * classes_per_task}.")
    task = keras.Input((), dtype="int32", name=TASK)
    logits = SelectHead(num_tasks, classes_per_task)(features, task)
    return keras.Model({INPUTS: x, TASK: task}, logits, name=name)
