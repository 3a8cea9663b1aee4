"""The synthesized template's policies, resolved to the names of a local deployment.

The template names the stack's own resources by logical ID (``Ref``,
``Fn::GetAtt``) and the configured ones (the source bucket, an event bus) by
the ARNs the configuration gave. The harness names them its own way. So the
template is resolved against a ``Binding``: each resource the stack creates
is bound, by its construct path, to the harness resource that plays its part;
the configured ARNs are renamed to the harness's; what the harness does not
have stays an unresolvable ``<LogicalId.Attr>`` that no real ARN matches.

Roles get synthetic ARNs (``arn:aws:iam::<account>:role/<logical id>``): the
same value wherever the template refers to a role (a function's role, a
bucket policy's ``aws:PrincipalArn`` condition), which is all that matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scanctl.harness.principals import FUNCTION, STATE_MACHINE, Principal


@dataclass
class Binding:
    account: str
    region: str
    # Construct path (without the stack's name and "/Resource") -> physical values:
    # {"Ref": ..., "Arn": ..., "Name": ...}.
    by_path: dict[str, dict[str, str]]
    # Harness name of each Lambda function, by its folder under functions/.
    function_names: dict[str, str]
    # Harness name of each state machine, by its kind: STANDARD, EXPRESS, RESCAN.
    machine_names: dict[str, str]
    # Literal strings of the configuration -> the harness's (ARNs first, then names).
    renames: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PrincipalPolicies:
    principal: Principal
    role_arn: str
    statements: list[dict[str, Any]]  # resolved
    managed: list[str]  # managed policy ARNs attached to the role (not evaluated)


@dataclass
class Model:
    principals: dict[Principal, PrincipalPolicies]
    bucket_policies: dict[str, list[dict[str, Any]]]  # bucket name -> resolved statements


def load(template: dict[str, Any], binding: Binding) -> Model:
    resources = template["Resources"]
    values = _physical_values(resources, binding)
    resolver = _Resolver(binding, values)
    # A machine the stack names itself (the Rescan machine: scanctl finds it by
    # name) appears by that name in ARNs the stack formats, not through a Ref.
    for resource in resources.values():
        name = resource["Properties"].get("StateMachineName")
        local = binding.machine_names.get(machine_kind(resource))
        if resource["Type"] == "AWS::StepFunctions::StateMachine" and name and local:
            for kind in ("stateMachine", "execution"):
                resolver.renames.append((f":{kind}:{resolver.resolve(name)}", f":{kind}:{local}"))
    resolve = resolver.resolve
    roles: dict[str, list[dict[str, Any]]] = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy":
            document = resolve(resource["Properties"]["PolicyDocument"])
            for role in resource["Properties"].get("Roles", []):
                roles.setdefault(role["Ref"], []).extend(_listed(document["Statement"]))
    principals: dict[Principal, PrincipalPolicies] = {}
    for resource in resources.values():
        principal = _principal(resource, binding)
        if principal is None:
            continue
        props = resource["Properties"]
        role_ref = props.get("Role") or props.get("RoleArn")
        role_id = role_ref["Fn::GetAtt"][0]
        role = resources[role_id]["Properties"]
        statements = list(roles.get(role_id, []))
        for inline in role.get("Policies", []):
            statements += _listed(resolve(inline["PolicyDocument"])["Statement"])
        principals[principal] = PrincipalPolicies(
            principal=principal,
            role_arn=values[role_id]["Arn"],
            statements=statements,
            managed=[str(resolve(m)) for m in role.get("ManagedPolicyArns", [])],
        )
    buckets: dict[str, list[dict[str, Any]]] = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::S3::BucketPolicy":
            props = resolve(resource["Properties"])
            buckets.setdefault(props["Bucket"], []).extend(
                _listed(props["PolicyDocument"]["Statement"])
            )
    return Model(principals=principals, bucket_policies=buckets)


def command_of(resource: dict[str, Any]) -> str | None:
    """The folder under functions/ whose handler an image function runs."""
    command = resource["Properties"].get("ImageConfig", {}).get("Command") or [""]
    handler = command[0]
    if handler.startswith("functions.") and handler.endswith(".app.lambda_handler"):
        return handler.removeprefix("functions.").removesuffix(".app.lambda_handler")
    return None


def machine_kind(resource: dict[str, Any]) -> str:
    if "/Rescan/" in resource.get("Metadata", {}).get("aws:cdk:path", ""):
        return "RESCAN"
    return resource["Properties"].get("StateMachineType", "STANDARD")


def construct_path(resource: dict[str, Any]) -> str:
    """``Audit/Table`` for ``S3VirusScanner-dev/Audit/Table/Resource``."""
    path = resource.get("Metadata", {}).get("aws:cdk:path", "")
    return path.split("/", 1)[-1].removesuffix("/Resource")


def _principal(resource: dict[str, Any], binding: Binding) -> Principal | None:
    if resource["Type"] == "AWS::Lambda::Function":
        name = command_of(resource)
        return Principal(FUNCTION, name) if name else None
    if resource["Type"] == "AWS::StepFunctions::StateMachine":
        name = binding.machine_names.get(machine_kind(resource))
        return Principal(STATE_MACHINE, name) if name else None
    return None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _physical_values(resources: dict[str, Any], b: Binding) -> dict[str, dict[str, str]]:
    """What ``Ref`` and ``Fn::GetAtt`` of each resource are in the local deployment."""
    values: dict[str, dict[str, str]] = {}
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            values[logical_id] = {"Arn": f"arn:aws:iam::{b.account}:role/{logical_id}"}
        elif kind == "AWS::Lambda::Function" and command_of(resource) in b.function_names:
            name = b.function_names[command_of(resource)]  # type: ignore[index]
            arn = f"arn:aws:lambda:{b.region}:{b.account}:function:{name}"
            values[logical_id] = {"Ref": name, "Arn": arn}
        elif kind == "AWS::StepFunctions::StateMachine" and machine_kind(resource) in (
            b.machine_names
        ):
            name = b.machine_names[machine_kind(resource)]
            arn = f"arn:aws:states:{b.region}:{b.account}:stateMachine:{name}"
            values[logical_id] = {"Ref": arn, "Arn": arn, "Name": name}
        elif construct_path(resource) in b.by_path:
            values[logical_id] = b.by_path[construct_path(resource)]
    return values


class _Resolver:
    def __init__(self, binding: Binding, values: dict[str, dict[str, str]]) -> None:
        self.binding = binding
        self.values = values
        self.renames = list(binding.renames)
        self.pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": binding.region,
            "AWS::AccountId": binding.account,
            "AWS::URLSuffix": "amazonaws.com",
        }

    def resolve(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.rename(node)
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            [(fn, arg)] = node.items()
            if fn == "Ref":
                return self.pseudo.get(arg) or self.values.get(arg, {}).get("Ref", f"<{arg}>")
            if fn == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.values.get(logical_id, {}).get(attribute, f"<{logical_id}.{attribute}>")
            if fn == "Fn::Join":
                delimiter, items = arg
                return delimiter.join(str(self.resolve(item)) for item in items)
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(index)]
            if fn == "Fn::Split":
                delimiter, text = arg
                return str(self.resolve(text)).split(delimiter)
            if fn.startswith("Fn::"):
                raise ValueError(f"cannot resolve {fn} in a policy: teach tests/iamcheck it")
        return {key: self.resolve(value) for key, value in node.items()}

    def rename(self, text: str) -> str:
        for old, new in self.renames:
            text = text.replace(old, new)
        return text
