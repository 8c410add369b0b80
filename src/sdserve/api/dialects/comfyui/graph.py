"""An API-format ComfyUI prompt checked as a whole, before anything runs.

Follows ComfyUI's execution.py (validate_prompt / validate_inputs): the same error types and
bodies (``missing_node_type``, ``prompt_no_outputs``, ``required_input_missing``,
``bad_linked_input``, ``return_type_mismatch``, ``invalid_input_type``,
``value_smaller_than_min`` / ``value_bigger_than_max``, ``value_not_in_list``, and
``prompt_outputs_failed_validation`` with ``node_errors`` per node). Where ComfyUI itself would
crash or loop (a link to a missing node or slot, a cycle, inputs that are not an object)
this answers with a node error too. As in ComfyUI, each output is checked on its own: the
valid ones run and the invalid ones are reported in ``node_errors``; only a graph with no valid
output is a 400. One difference, a refusal rather than a guess: an input a node does not have
is an error (ComfyUI drops it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .checkpoints import find_checkpoint
from .nodes import LINK_TYPES, NODES, Input, NodeDef
from .samplers import SamplerRefused, resolve_comfy

if TYPE_CHECKING:  # pragma: no cover
    from .compile import CompileEnv

__all__ = ["GraphError", "Link", "Node", "Graph", "validate_prompt", "error_item", "node_available"]

# Widget keys the ComfyUI frontend writes into API-format exports that no node declares
# (LoadImage's upload button); they carry no value for the node and are dropped, as ComfyUI does.
_FRONTEND_KEYS = frozenset({"upload"})


class GraphError(Exception):
    """An invalid prompt: ComfyUI's 400 body is ``{"error": error, "node_errors": node_errors}``."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{error.get('message')}: {error.get('details')}")
        self.error = error
        self.node_errors = node_errors or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


@dataclass(frozen=True)
class Link:
    """An input fed by another node's output ``slot``."""

    node_id: str
    slot: int


@dataclass
class Node:
    id: str
    class_type: str
    definition: NodeDef
    # Widget values converted to their types; links as Link.
    inputs: dict[str, Any]
    title: str | None = None


@dataclass
class Graph:
    """A validated prompt: every node reachable from an output, and the outputs in id order."""

    nodes: dict[str, Node]
    outputs: list[str] = field(default_factory=list)
    # The invalid outputs' errors (ComfyUI's node_errors): reported, while the valid outputs run.
    node_errors: dict[str, Any] = field(default_factory=dict)


def error_item(kind: str, message: str, details: str, **extra_info: Any) -> dict[str, Any]:
    """One entry of ``error`` or of a node's ``errors``, in ComfyUI's shape."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def node_available(definition: NodeDef) -> str | None:
    """None when this server compiles ``definition``; otherwise why not."""
    from sdserve.engine.params import GenerationParams

    from .compile import COMPILERS

    if definition.needs is not None and definition.needs not in GenerationParams.model_fields:
        return f"this server's engine has no {definition.needs_what} support yet"
    if definition.name not in COMPILERS:
        return "sdserve does not compile this node yet"
    return None


def _id_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def _node_error(errors: list[dict[str, Any]], class_type: Any) -> dict[str, Any]:
    return {"errors": errors, "dependent_outputs": [], "class_type": class_type}


def _check_nodes(prompt: dict[str, Any]) -> dict[str, NodeDef]:
    """Every node has a class_type this server knows and runs (ComfyUI's first pass)."""
    found: dict[str, NodeDef] = {}
    missing: dict[str, Any] = {}
    first: dict[str, Any] | None = None
    for node_id, node in prompt.items():
        node_id = str(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            title = node.get("_meta", {}).get("title") if isinstance(node, dict) else None
            err = error_item("missing_node_type", f"Node '{title or f'ID #{node_id}'}' has no class_type. The "
                             "workflow may be corrupted or a custom node is missing.", f"Node ID '#{node_id}'",
                             node_id=node_id, class_type=None, node_title=title)
            raise GraphError(err, {})
        class_type = node["class_type"]
        meta = node.get("_meta")
        title = meta.get("title", class_type) if isinstance(meta, dict) else class_type
        definition = NODES.get(class_type)
        why = "not found. The custom node may not be installed." if definition is None else None
        if definition is not None and (reason := node_available(definition)) is not None:
            why = f"is not available on this server: {reason}."
        if why is not None:
            err = error_item("missing_node_type", f"Node '{title}' {why}", f"Node ID '#{node_id}'",
                             node_id=node_id, class_type=class_type, node_title=title)
            first = first or err
            missing[node_id] = _node_error([err], class_type)
            continue
        assert definition is not None
        found[node_id] = definition
    if first is not None:
        raise GraphError(first, missing)
    return found


class _Validator:
    def __init__(self, prompt: dict[str, Any], defs: dict[str, NodeDef], env: CompileEnv) -> None:
        self.prompt = prompt
        self.defs = defs
        self.env = env
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self.nodes: dict[str, Node] = {}
        self.stack: list[str] = []

    def node(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        self.stack.append(node_id)
        definition = self.defs[node_id]
        raw = self.prompt[node_id].get("inputs", {})
        errors: list[dict[str, Any]] = []
        valid = True
        values: dict[str, Any] = {}
        if not isinstance(raw, dict):
            errors.append(error_item("invalid_prompt", "Node inputs must be an object", f"Node ID '#{node_id}'"))
            raw = {}
        for name in raw:
            if definition.input(name) is None and name not in _FRONTEND_KEYS:
                errors.append(error_item(
                    "input_not_supported", "Input is not supported",
                    f"{name}: {definition.name} has no input {name!r} (it takes "
                    f"{', '.join(n for n, _ in definition.inputs)})", input_name=name))
        for name, spec in definition.inputs:
            if name not in raw:
                if not spec.optional:
                    errors.append(error_item("required_input_missing", "Required input is missing", name,
                                             input_name=name))
                continue
            ok, value, err = self.input(node_id, name, spec, raw[name])
            if err is not None:
                errors.append(err)
            valid = valid and ok
            values[name] = value
        self.stack.pop()
        meta = self.prompt[node_id].get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        self.nodes[node_id] = Node(node_id, definition.name, definition, values, title)
        result = (valid and not errors, errors)
        self.validated[node_id] = result
        return result

    def input(self, node_id: str, name: str, spec: Input, val: Any) -> tuple[bool, Any, dict[str, Any] | None]:
        """(inputs upstream valid, converted value, this input's error or None)."""
        info = [spec.type, spec.options]
        if isinstance(val, list):
            return self.link(node_id, name, spec, val, info)
        if spec.type in LINK_TYPES:
            return True, val, error_item("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                         "[node_id, slot_index]", name, input_name=name, input_config=info,
                                         received_value=val)
        if isinstance(val, dict) and "__value__" in val:  # ComfyUI's wrapper for list-valued widgets
            val = val["__value__"]
        try:
            val = _convert(spec.type, val)
        except (TypeError, ValueError, OverflowError) as ex:
            return True, val, error_item("invalid_input_type", f"Failed to convert an input value to a "
                                         f"{spec.type} value", f"{name}, {val}, {ex}", input_name=name,
                                         input_config=info, received_value=val, exception_message=str(ex))
        lo, hi = spec.options.get("min"), spec.options.get("max")
        if lo is not None and val < lo:
            return True, val, error_item("value_smaller_than_min", f"Value {val} smaller than min of {lo}", name,
                                         input_name=name, input_config=info, received_value=val)
        if hi is not None and val > hi:
            return True, val, error_item("value_bigger_than_max", f"Value {val} bigger than max of {hi}", name,
                                         input_name=name, input_config=info, received_value=val)
        if spec.choices is not None:
            err = self.combo(node_id, name, spec, val)
            if err is not None:
                return True, val, err
        return True, val, None

    def link(self, node_id: str, name: str, spec: Input, val: list[Any],
             info: list[Any]) -> tuple[bool, Any, dict[str, Any] | None]:
        def bad(why: str) -> tuple[bool, Any, dict[str, Any]]:
            return True, val, error_item("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                         "[node_id, slot_index]", f"{name}: {why}" if why else name,
                                         input_name=name, input_config=info, received_value=val)

        if len(val) != 2:
            return bad("")
        o_id, slot = str(val[0]), val[1]
        if o_id not in self.defs:
            return bad(f"node '{o_id}' does not exist in the prompt")
        outputs = self.defs[o_id].outputs
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(outputs):
            return bad(f"node '{o_id}' ({self.defs[o_id].name}) has no output {slot!r} "
                       f"(it has {len(outputs)})")
        received = outputs[slot]
        if received != spec.type:
            return True, val, error_item(
                "return_type_mismatch", "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({spec.type})", input_name=name,
                input_config=info, received_type=received, linked_node=val)
        if o_id in self.stack:
            return True, val, error_item("dependency_cycle", "Dependency cycle detected",
                                         f"{name}: links back to node '{o_id}', which depends on this node",
                                         input_name=name, linked_node=val)
        ok, _ = self.node(o_id)
        return ok, Link(o_id, slot), None

    def combo(self, node_id: str, name: str, spec: Input, val: Any) -> dict[str, Any] | None:
        definition = self.defs[node_id]
        if name == "ckpt_name" and isinstance(val, str) and find_checkpoint(self.env.catalog, val) is not None:
            return None  # a model may be named by id, alias or slug too
        if definition.input("image") is spec and definition.name in ("LoadImage", "LoadImageMask"):
            return None  # an uploaded file: LoadImage's own check (compile) reads it
        if name in ("sampler_name", "scheduler"):
            raw = self.prompt[node_id]["inputs"]
            try:
                resolve_comfy(str(raw.get("sampler_name")), str(raw.get("scheduler")))
            except SamplerRefused as refused:
                if refused.input_name == name:
                    kind = refused.kind
                    message = {"value_not_in_list": "Value not in list"}.get(kind, "Custom validation failed for node")
                    return error_item(kind, message, f"{name}: {refused.message}", input_name=name,
                                      received_value=val)
            return None
        choices = spec.choices(self.env) if spec.choices else []
        if val in choices:
            return None
        long = len(choices) > 20
        listed = f"(list of length {len(choices)})" if long else str(choices)
        return error_item("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {listed}",
                          input_name=name, input_config=None if long else [choices, spec.options],
                          received_value=val)


def _convert(kind: str, val: Any) -> Any:
    if kind == "INT":
        if isinstance(val, float) and not math.isfinite(val):
            raise ValueError("not a finite number")
        return int(val)
    if kind == "FLOAT":
        out = float(val)
        if not math.isfinite(out):
            raise ValueError("not a finite number")
        return out
    if kind == "STRING":
        if isinstance(val, (dict, list)):
            raise TypeError(f"expected text, got {type(val).__name__}")
        return str(val)
    if kind == "BOOLEAN":
        return bool(val)
    return val


def validate_prompt(prompt: Any, env: CompileEnv) -> Graph:
    """The prompt as a Graph, or GraphError with ComfyUI's ``error`` and ``node_errors``."""
    if not isinstance(prompt, dict) or not prompt:
        raise GraphError(error_item("invalid_prompt", "Cannot execute because the prompt is not a non-empty object "
                                    "of nodes keyed by id", f"received {type(prompt).__name__}"), {})
    prompt = {str(k): v for k, v in prompt.items()}
    defs = _check_nodes(prompt)
    outputs = sorted((i for i, d in defs.items() if d.output_node), key=_id_order)
    if not outputs:
        raise GraphError(error_item("prompt_no_outputs", "Prompt has no outputs", ""), {})
    v = _Validator(prompt, defs, env)
    node_errors: dict[str, Any] = {}
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    for o in outputs:
        ok, reasons = v.node(o)
        if ok:
            continue
        failed.append((o, reasons))
        for node_id, (node_ok, errs) in v.validated.items():
            if not node_ok and errs:
                node_errors.setdefault(node_id, _node_error(errs, defs[node_id].name))
                node_errors[node_id]["dependent_outputs"].append(o)
    good = [o for o in outputs if o not in {f for f, _ in failed}]
    if not good:  # ComfyUI: a 400 only when no output is valid; otherwise the valid ones run
        raise outputs_failed(failed, node_errors)
    return Graph(v.nodes, good, node_errors)


def outputs_failed(failed: list[tuple[str, list[dict[str, Any]]]], node_errors: dict[str, Any]) -> GraphError:
    """ComfyUI's top-level error: the outputs' own errors, one ``message: details`` a line."""
    details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
    return GraphError(error_item("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                      node_errors)
