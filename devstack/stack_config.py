"""The local stack's names and knobs, read from template.yaml's defaults where it has them.

`make demo` and the end-to-end test create the same delivery stream, S3 prefixes, processor
buffering hints and Lambda environment that `sam deploy` would, as far as template.yaml states
them as literals or parameter defaults. Anything the template leaves to CloudFormation (a
generated bucket name, ``!GetAtt`` values) gets a local stand-in value.

Example:
    >>> cfg = StackConfig.from_template(None)
    >>> cfg.stream_name, cfg.bucket_name
    ('podhose', 'podhose-logs-local')
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
#: Dummy credentials for every local client (moto accepts anything).
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
DEFAULT_STREAM = "podhose"
DEFAULT_BUCKET = "podhose-logs-local"
REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Everything the local stand-in needs to behave like the deployed stream.

    Attributes:
        stream_name: the Firehose delivery stream name.
        bucket_name: the destination bucket (local name when the template generates it).
        prefix / error_prefix: ExtendedS3 ``Prefix`` / ``ErrorOutputPrefix`` (may hold
            ``!{...}`` expressions); empty means Firehose's defaults.
        processor_buffer_bytes / processor_interval_s: the Lambda processor's buffering
            hints. The demo shortens the interval; the template's values are in
            ``template_processor_hints``.
        lambda_env: the transform function's environment variables.
        dynamic_partitioning: whether the template enables dynamic partitioning.
        gzip_objects: ``CompressionFormat: GZIP`` (objects are gzipped, keys end in .gz).
        lambda_retries: the processor's ``NumberOfRetries`` for failed invocations.
        source: where the values came from (for the demo's banner).
    """

    stream_name: str = DEFAULT_STREAM
    bucket_name: str = DEFAULT_BUCKET
    prefix: str = ""
    error_prefix: str = ""
    processor_buffer_bytes: int = 1024 * 1024
    processor_interval_s: float = 1.0
    template_processor_hints: tuple[float, float] | None = None
    lambda_env: dict[str, str] = dataclasses.field(default_factory=dict)
    dynamic_partitioning: bool = False
    gzip_objects: bool = False
    lambda_retries: int = 3
    source: str = "built-in defaults (no template.yaml)"

    @property
    def stream_arn(self) -> str:
        return f"arn:aws:firehose:{REGION}:{ACCOUNT_ID}:deliverystream/{self.stream_name}"

    @property
    def data_root(self) -> str:
        """The literal start of the data prefix (where to list delivered objects)."""
        return self.prefix.split("!{", 1)[0]

    @property
    def error_root(self) -> str:
        """The literal start of the error prefix."""
        return (self.error_prefix or "processing-failed/").split("!{", 1)[0]

    @property
    def lambda_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.stream_name}-transform"

    @classmethod
    def from_template(
        cls,
        path: Path | None = TEMPLATE_PATH,
        parameters: dict[str, str] | None = None,
        **overrides: Any,
    ) -> StackConfig:
        """Read template.yaml (best effort: unknown shapes fall back to defaults).

        ``parameters`` override parameter defaults like ``sam deploy --parameter-overrides``;
        keyword ``overrides`` set fields directly (None values are ignored).
        """
        values: dict[str, Any] = {}
        if path is not None and path.exists():
            values = _read_template(path, parameters or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# --- template.yaml reading -------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags (!Ref, !Sub, ...) into dicts."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # the long form: [resource, attribute]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """template.yaml as CloudFormation sees it (short-form tags in their long form)."""
    return yaml.load(path.read_text(), Loader=_CfnLoader)


class _UnresolvedError(Exception):
    pass


_PSEUDO: dict[str, Any] = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
    "AWS::StackName": "podhose",
    "AWS::NoValue": None,
}


def _resolve(value: Any, params: dict[str, Any], conditions: dict[str, Any] | None = None) -> Any:
    """Resolve literals, ``!Ref``, ``!Sub``, ``!If`` and condition functions over parameter
    defaults; raise _UnresolvedError for anything else (``!GetAtt``, resource refs, ...)."""
    conditions = conditions or {}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_resolve(v, params, conditions) for v in value]
    if not isinstance(value, dict):
        raise _UnresolvedError(repr(value))
    if len(value) == 1 and any(k in ("Ref", "Condition") or k.startswith("Fn::") for k in value):
        ((fn, arg),) = value.items()
        return _intrinsic(fn, arg, params, conditions)
    return {k: _resolve(v, params, conditions) for k, v in value.items()}


def _intrinsic(fn: str, arg: Any, params: dict[str, Any], conditions: dict[str, Any]) -> Any:
    if fn == "Ref" and arg in params:
        return params[arg]
    if fn == "Ref" and arg in _PSEUDO:
        return _PSEUDO[arg]
    if fn == "Fn::Sub" and isinstance(arg, str):
        return _sub(arg, params)
    if fn == "Fn::If":
        name, when_true, when_false = arg
        chosen = when_true if _condition(name, params, conditions) else when_false
        return _resolve(chosen, params, conditions)
    if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
        return _truth({fn: arg}, params, conditions)
    raise _UnresolvedError(f"{fn}: {arg!r}")


def _condition(name: str, params: dict[str, Any], conditions: dict[str, Any]) -> bool:
    if name not in conditions:
        raise _UnresolvedError(f"condition {name}")
    return _truth(conditions[name], params, conditions)


def _truth(value: Any, params: dict[str, Any], conditions: dict[str, Any]) -> bool:
    ((fn, arg),) = value.items()
    if fn == "Condition":
        return _condition(arg, params, conditions)
    if fn == "Fn::Equals":
        left, right = (str(_resolve(v, params, conditions)) for v in arg)
        return left == right
    results = [_truth(v, params, conditions) for v in arg]
    if fn == "Fn::Not":
        return not results[0]
    return all(results) if fn == "Fn::And" else any(results)


def _sub(text: str, params: dict[str, Any]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params:
            return str(params[name])
        if name in _PSEUDO:
            return str(_PSEUDO[name])
        raise _UnresolvedError(name)

    # ${!Literal} is an escaped "${Literal}"; Firehose's own !{...} expressions pass through.
    return re.sub(r"\$\{(?!!)([^}]+)\}", repl, text).replace("${!", "${")


class _Template:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.params = {
            name: spec["Default"]
            for name, spec in (doc.get("Parameters") or {}).items()
            if isinstance(spec, dict) and "Default" in spec
        }
        self.conditions: dict[str, Any] = doc.get("Conditions") or {}

    def get(self, value: Any, default: Any = None) -> Any:
        try:
            resolved = _resolve(value, self.params, self.conditions)
        except (_UnresolvedError, TypeError, ValueError):
            return default
        return default if resolved is None else resolved


def parameter_problems(parameters: dict[str, str], path: Path = TEMPLATE_PATH) -> list[str]:
    """What CloudFormation would refuse in these parameter values: unknown names, values
    outside AllowedValues, AllowedPattern, MinValue/MaxValue or MinLength/MaxLength.

    >>> for problem in parameter_problems({"DynamicPartitioning": "maybe", "Nope": "1"}):
    ...     print(problem)
    template.yaml has no parameter Nope
    DynamicPartitioning=maybe: not one of ['true', 'false']
    """
    declared = load_template(path).get("Parameters") or {}
    problems = [
        f"{path.name} has no parameter {name}" for name in parameters if name not in declared
    ]
    for name, value in parameters.items():
        rule = declared.get(name)
        if rule is not None:
            problems += [f"{name}={value}: {why}" for why in _refusals(rule, value)]
    return problems


def _refusals(rule: dict[str, Any], value: str) -> list[str]:
    allowed = rule.get("AllowedValues")
    if allowed is not None and value not in [str(v) for v in allowed]:
        return [f"not one of {[str(v) for v in allowed]}"]
    pattern = rule.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        return [f"does not match {pattern}"]
    if rule.get("Type") == "Number":
        return _number_refusals(rule, value)
    if "MaxLength" in rule and len(value) > int(rule["MaxLength"]):
        return [f"longer than {rule['MaxLength']}"]
    return []


def _number_refusals(rule: dict[str, Any], value: str) -> list[str]:
    try:
        number = float(value)
    except ValueError:
        return ["not a number"]
    if "MinValue" in rule and number < float(rule["MinValue"]):
        return [f"below the minimum {rule['MinValue']}"]
    if "MaxValue" in rule and number > float(rule["MaxValue"]):
        return [f"above the maximum {rule['MaxValue']}"]
    return []


def _read_template(path: Path, parameters: dict[str, str]) -> dict[str, Any]:
    doc = load_template(path)
    tpl = _Template(doc)
    problems = parameter_problems(parameters, path)
    if problems:
        raise ValueError("; ".join(problems))
    tpl.params.update(parameters)
    out: dict[str, Any] = {"source": f"{path.name} (parameter defaults)"}
    for res in (doc.get("Resources") or {}).values():
        props = res.get("Properties") or {}
        kind = res.get("Type")
        if kind == "AWS::KinesisFirehose::DeliveryStream":
            out.update(_read_stream(props, tpl))
        elif kind == "AWS::S3::Bucket" and "BucketName" in props:
            name = tpl.get(props["BucketName"])
            if isinstance(name, str) and name:
                out["bucket_name"] = name
        elif kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            variables = (props.get("Environment") or {}).get("Variables") or {}
            env = {k: tpl.get(v) for k, v in variables.items()}
            out["lambda_env"] = {k: str(v) for k, v in env.items() if v is not None}
    return out


def _read_stream(props: dict[str, Any], tpl: _Template) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = tpl.get(props.get("DeliveryStreamName"))
    if isinstance(name, str):
        out["stream_name"] = name
    dest = props.get("ExtendedS3DestinationConfiguration") or {}
    for key, field in (("Prefix", "prefix"), ("ErrorOutputPrefix", "error_prefix")):
        value = tpl.get(dest.get(key))
        if isinstance(value, str):
            out[field] = value
    if tpl.get(dest.get("CompressionFormat")) == "GZIP":
        out["gzip_objects"] = True
    dyn = tpl.get(dest.get("DynamicPartitioningConfiguration"), default={})
    if isinstance(dyn, dict):
        out["dynamic_partitioning"] = str(tpl.get(dyn.get("Enabled"), False)).lower() == "true"
    for processor in (dest.get("ProcessingConfiguration") or {}).get("Processors") or []:
        if processor.get("Type") != "Lambda":
            continue
        hints = {
            p.get("ParameterName"): tpl.get(p.get("ParameterValue"))
            for p in processor.get("Parameters") or []
        }
        try:
            size_mb = float(hints.get("BufferSizeInMBs") or 1)
            interval = float(hints.get("BufferIntervalInSeconds") or 60)
            retries = int(hints.get("NumberOfRetries") or 3)
        except (TypeError, ValueError):
            continue
        out["template_processor_hints"] = (size_mb, interval)
        out["processor_buffer_bytes"] = int(size_mb * 1024 * 1024)
        out["lambda_retries"] = retries
    return out
