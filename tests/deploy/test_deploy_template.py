"""template.yaml (AWS SAM) agrees with the code it deploys.

The AWS tools (sam validate --lint, cfn-lint, checkov, sam build) run as `make deploy-check`
steps; these tests check what only the project's own code can tell: the transform's
environment variables, its handler and dependencies, and the names k8s/ relies on.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.stack_config import load_template
from transform_lambda import settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REQUIREMENTS = ROOT / "deploy" / "lambda" / "requirements.txt"
K8S = ROOT / "k8s"

# Environment variables the template sets for libraries, not for transform settings.
LIBRARY_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}
# Importable in the Lambda Python runtime without packaging them.
RUNTIME_MODULES = {"boto3", "botocore"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _resolve(value: Any, params: dict[str, str], conditions: dict[str, bool]) -> Any:
    """Evaluate the few intrinsics the transform's environment uses (Ref, Fn::If)."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return params[arg]
        if key == "Fn::If":
            name, if_true, if_false = arg
            return _resolve(if_true if conditions[name] else if_false, params, conditions)
    if isinstance(value, dict | list):
        raise AssertionError(f"unexpected intrinsic in the transform environment: {value!r}")
    return str(value)


def _environment(template: dict[str, Any], **overrides: str) -> dict[str, str]:
    params = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    params.update(overrides)
    conditions = {"UseDynamicPartitioning": params["DynamicPartitioning"] == "true"}
    variables = template["Resources"]["TransformFunction"]["Properties"]["Environment"]["Variables"]
    return {name: _resolve(value, params, conditions) for name, value in variables.items()}


def test_transform_environment_is_exactly_the_settings_the_transform_reads(template):
    variables = template["Resources"]["TransformFunction"]["Properties"]["Environment"]["Variables"]
    assert set(variables) - LIBRARY_ENV == set(settings.ENV_VARS)
    assert set(variables) >= LIBRARY_ENV


def test_template_defaults_are_the_transform_defaults(template):
    env = _environment(template)
    assert settings.TransformSettings.from_env(env) == settings.TransformSettings()
    assert env["POWERTOOLS_SERVICE_NAME"] == "podhose-transform"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "podhose"


def test_dynamic_partitioning_keys_match_the_s3_prefix(template):
    env = _environment(template, DynamicPartitioning="true")
    keys = settings.TransformSettings.from_env(env).partition_keys
    assert keys == ("namespace", "container")
    assert set(keys) <= set(settings.PARTITION_KEY_NAMES)

    s3 = template["Resources"]["DeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    name, partitioned, plain = s3["Prefix"]["Fn::If"]
    assert name == "UseDynamicPartitioning"
    assert re.findall(r"!\{partitionKeyFromLambda:(\w+)\}", partitioned) == list(keys)
    assert "partitionKeyFromLambda" not in plain
    # Data and errors under the two prefixes the Firehose role may write.
    assert partitioned.startswith("logs/")
    assert plain.startswith("logs/")
    assert s3["ErrorOutputPrefix"].startswith("errors/!{firehose:error-output-type}/")
    assert s3["DynamicPartitioningConfiguration"]["Fn::If"][0] == "UseDynamicPartitioning"


def test_handler_exists(template):
    handler = template["Resources"]["TransformFunction"]["Properties"]["Handler"]
    module_name, function_name = handler.rsplit(".", 1)
    assert module_name.startswith("transform_lambda.")
    assert callable(getattr(importlib.import_module(module_name), function_name))


def _requirement_modules() -> set[str]:
    names = set()
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().removesuffix("\\").strip()
        if line and not line.startswith("--hash="):
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement in {REQUIREMENTS.name}: {line}"
            names.add(name.strip().lower().replace("-", "_"))
    return names


BUNDLED = ("transform_lambda", "podhose_wire")  # copied into the bundle by deploy/lambda/Makefile


def test_lambda_requirements_cover_the_transform_imports():
    packaged = _requirement_modules()
    missing = set()
    for path in sorted(p for name in BUNDLED for p in (ROOT / name).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            for top in tops - set(sys.stdlib_module_names) - RUNTIME_MODULES:
                if top not in BUNDLED and top not in packaged:
                    missing.add(f"{path.name}: {top}")
    assert not missing, f"add to {REQUIREMENTS.relative_to(ROOT)}: {sorted(missing)}"


def test_lambda_requirements_match_the_project_dependencies():
    """The Lambda ships what pyproject.toml declares for it: its `lambda` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["optional-dependencies"]["lambda"])
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("-", "_") for d in declared}
    assert names <= _requirement_modules()


def test_processor_buffer_default_within_firehose_range(template):
    params = template["Parameters"]
    size = float(params["ProcessorBufferSizeMB"]["Default"])
    assert 0.2 <= size <= 3
    pattern = re.compile(params["ProcessorBufferSizeMB"]["AllowedPattern"])
    for ok in ("0.2", "0.25", "0.5", "1", "2.5", "3"):
        assert pattern.fullmatch(ok), ok
    for bad in ("0.1", "0", "3.5", "4", "", "1.234"):
        assert not pattern.fullmatch(bad), bad
    # Firehose needs >= 64 MB S3 buffers with dynamic partitioning: the default must allow it.
    assert int(params["S3BufferSizeMB"]["Default"]) >= 64


def test_names_shared_with_k8s_agree(template):
    params = template["Parameters"]
    configmap = yaml.safe_load((K8S / "configmap.yaml").read_text())
    serviceaccount = yaml.safe_load((K8S / "serviceaccount.yaml").read_text())
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert configmap["data"]["PODHOSE_DELIVERY_STREAM"] == params["DeliveryStreamName"]["Default"]
    assert serviceaccount["metadata"]["name"] == params["ForwarderServiceAccount"]["Default"]
    assert kustomization["namespace"] == params["ForwarderNamespace"]["Default"]


def test_transform_may_reingest_only_into_its_own_stream(template):
    role = template["Resources"]["TransformRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    reingest = [s for s in statements if s["Action"] == "firehose:PutRecordBatch"]
    assert len(reingest) == 1
    assert reingest[0]["Resource"]["Fn::Sub"].endswith(":deliverystream/${DeliveryStreamName}")
    stream = template["Resources"]["DeliveryStream"]["Properties"]
    assert stream["DeliveryStreamName"] == {"Ref": "DeliveryStreamName"}


def test_outputs(template):
    assert set(template["Outputs"]) >= {
        "DeliveryStreamName",
        "Region",
        "BucketName",
        "ForwarderRoleArn",
        "ForwarderPolicyArn",
        "TransformFunctionName",
    }


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_alarms_cover_each_kind_and_notify(template):
    alarms = _alarms(template)
    watched = {(a["Namespace"], a["MetricName"]) for a in alarms.values()}
    assert watched >= {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Firehose", "DeliveryToS3.DataFreshness"),
        ("AWS/Firehose", "ExecuteProcessing.Success"),
        ("AWS/Firehose", "ThrottledRecords"),
        ("podhose", "RecordsProcessingFailed"),  # the transform's own EMF metric
    }
    topic = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [topic]
    freshness = next(a for a in alarms.values() if a["MetricName"].startswith("DeliveryToS3"))
    assert freshness["Threshold"] == {"Ref": "DataFreshnessThresholdSeconds"}
    emf = next(a for a in alarms.values() if a["Namespace"] == "podhose")
    service = _environment(template)["POWERTOOLS_SERVICE_NAME"]
    assert emf["Dimensions"] == [{"Name": "service", "Value": service}]
    assert template["Resources"]["AlarmTopic"]["Condition"] == "CreateAlarmTopic"


def test_athena_table_projects_the_partitions_firehose_writes(template):
    table = template["Resources"]["LogTable"]["Properties"]["TableInput"]
    params = table["Parameters"]
    assert params["projection.enabled"] == "true"
    s3 = template["Resources"]["DeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    _, partitioned, plain = s3["Prefix"]["Fn::If"]
    _, partitioned_location, plain_location = params["storage.location.template"]["Fn::If"]
    _, partitioned_keys, plain_keys = table["PartitionKeys"]["Fn::If"]
    for prefix, location, keys in (
        (partitioned, partitioned_location["Fn::Sub"], partitioned_keys),
        (plain, plain_location["Fn::Sub"], plain_keys),
    ):
        # logs/namespace=!{partitionKeyFromLambda:namespace}/.../hour=!{timestamp:HH}/
        firehose_keys = re.findall(r"(\w+)=!\{", prefix)
        assert firehose_keys == [k["Name"] for k in keys]
        assert location == "s3://${LogBucket}/" + re.sub(
            r"(\w+)=!\{[^}]*\}", lambda m: f"{m[1]}=${{!{m[1]}}}", prefix
        )
        for key in firehose_keys:
            assert f"projection.{key}.type" in params
    columns = table["StorageDescriptor"]["Columns"]
    assert columns == [{"Name": "line", "Type": "string"}]  # no schema to break on


PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012"}


def _evaluate(value: Any, names: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """The intrinsics of the forwarder role's trust policy (Ref, If, Sub, Select, Split)."""
    if isinstance(value, list):
        return [_evaluate(v, names, conditions) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)).startswith(("Ref", "Fn::")):
        ((fn, arg),) = value.items()
        return _intrinsic(fn, arg, names, conditions)
    return {k: _evaluate(v, names, conditions) for k, v in value.items()}


def _intrinsic(fn: str, arg: Any, names: dict[str, Any], conditions: dict[str, bool]) -> Any:
    if fn == "Fn::If":
        name, if_true, if_false = arg
        return _evaluate(if_true if conditions[name] else if_false, names, conditions)
    if fn == "Fn::Sub":
        text, local = (arg, {}) if isinstance(arg, str) else arg
        scope = {**names, **{k: _evaluate(v, names, conditions) for k, v in local.items()}}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(scope[m.group(1)]), text)
    functions = {
        "Ref": lambda: names[arg],
        "Fn::Select": lambda: _evaluate(arg[1], names, conditions)[int(arg[0])],
        "Fn::Split": lambda: _evaluate(arg[1], names, conditions).split(arg[0]),
    }
    return functions[fn]()


@pytest.mark.parametrize("cluster", ["", "prod-eu"])
@pytest.mark.parametrize(
    "oidc", ["", "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"]
)
def test_pod_identity_trust_is_scoped_to_namespace_service_account_and_cluster(
    template, cluster: str, oidc: str
) -> None:
    params = {name: p.get("Default", "") for name, p in template["Parameters"].items()}
    params.update(ClusterName=cluster, OidcProviderArn=oidc, **PSEUDO)
    conditions = {"HasClusterName": bool(cluster), "HasOidcProvider": bool(oidc)}
    role = template["Resources"]["ForwarderRole"]["Properties"]
    document = _evaluate(role["AssumeRolePolicyDocument"], params, conditions)
    document = yaml.safe_load(document) if isinstance(document, str) else document
    (statement,) = [s for s in document["Statement"] if s["Sid"] == "EksPodIdentity"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {
        "aws:RequestTag/kubernetes-namespace": params["ForwarderNamespace"],
        "aws:RequestTag/kubernetes-service-account": params["ForwarderServiceAccount"],
    }
    arn = statement["Condition"]["StringLike"]["aws:RequestTag/eks-cluster-arn"]
    assert arn == f"arn:aws:eks:eu-west-1:123456789012:cluster/{cluster or '*'}"
