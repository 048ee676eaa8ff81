"""The GPU Ollama host: a locked-down instance and a cloud-init script that serves the model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.llm_host import render_user_data
from infra.settings import LlmSettings
from tests.infra.program import ProgramRun, run_program

INSTANCE = "aws:ec2/instance:Instance"


def test_instance_is_private_imdsv2_encrypted_and_keyless(each_stack: ProgramRun) -> None:
    host = each_stack.one(INSTANCE).inputs
    assert host["metadataOptions"]["httpTokens"] == "required"
    assert host["metadataOptions"]["httpEndpoint"] == "enabled"
    root = host["rootBlockDevice"]
    assert root["encrypted"] is True
    assert root["volumeType"] == "gp3"
    assert root["kmsKeyId"] == each_stack.outputs["kmsKeyArn"]
    assert root["volumeSize"] >= 100
    assert "keyName" not in host
    assert host["associatePublicIpAddress"] is False
    assert host["subnetId"] in each_stack.outputs["privateSubnetIds"]
    assert host["vpcSecurityGroupIds"] == [
        "sg-" + each_stack.one("aws:ec2/securityGroup:SecurityGroup", "-llm-sg").name
    ]


def test_instance_type_per_stack(staging: ProgramRun, prod: ProgramRun) -> None:
    assert staging.one(INSTANCE).inputs["instanceType"] == "g4dn.xlarge"
    assert prod.one(INSTANCE).inputs["instanceType"] == "g5.xlarge"


def test_instance_profile_grants_ssm_core_only(each_stack: ProgramRun) -> None:
    role = each_stack.one("aws:iam/role:Role", "-role")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    attachments = [
        a.inputs["policyArn"]
        for a in each_stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == role.name
    ]
    assert attachments == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    assert not each_stack.of_type("aws:iam/rolePolicy:RolePolicy")


def test_ami_is_the_deep_learning_base_gpu_ami_unless_configured(staging: ProgramRun) -> None:
    lookups = [args for token, args in staging.invokes if token == "aws:ec2/getAmi:getAmi"]
    assert lookups and lookups[0]["owners"] == ["amazon"]
    name_filter = next(f for f in lookups[0]["filters"] if f["name"] == "name")
    assert "Deep Learning Base" in name_filter["values"][0] and "GPU" in name_filter["values"][0]
    assert staging.one(INSTANCE).inputs["ami"] == "ami-0dlami0123456789a"
    pinned = run_program("staging", overrides={"llmAmiId": "ami-0abc12345def67890"})
    assert pinned.one(INSTANCE).inputs["ami"] == "ami-0abc12345def67890"
    assert not [t for t, _ in pinned.invokes if t == "aws:ec2/getAmi:getAmi"]


def test_user_data_installs_ollama_binds_all_interfaces_and_retries_the_pull(
    each_stack: ProgramRun,
) -> None:
    script = each_stack.one(INSTANCE).inputs["userData"]
    assert script.startswith("#!/bin/bash")
    assert "https://ollama.com/install.sh" in script
    assert "OLLAMA_BIND='0.0.0.0:11434'" in script
    assert 'Environment="OLLAMA_HOST=${OLLAMA_BIND}"' in script
    assert "OLLAMA_MODEL='falcon'" in script
    assert 'until ollama pull "${model}"; do' in script
    assert "systemctl enable ollama.service qckstrt-ollama-pull.service" in script
    assert "@@" not in script  # every placeholder rendered
    assert each_stack.outputs["llmUrl"] == "http://10.20.128.10:11434"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_rendered_user_data_is_valid_bash() -> None:
    script = render_user_data(
        LlmSettings(
            instance_type="g5.xlarge",
            ami_id="",
            root_volume_gb=150,
            model="llama3:8b",
            ollama_version="0.12.6",
        )
    )
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert "OLLAMA_MODEL='llama3:8b'" in script
    assert "OLLAMA_VERSION='0.12.6'" in script


def test_pull_script_retries_until_success(tmp_path: Path) -> None:
    """Run the generated pull loop with a fake `ollama` and `curl` that fail twice first."""
    script = render_user_data(
        LlmSettings(
            instance_type="g5.xlarge",
            ami_id="",
            root_volume_gb=150,
            model="falcon",
            ollama_version="",
        )
    )
    body = script.split("<<'PULL'\n", 1)[1].split("\nPULL\n", 1)[0]
    body = body.replace('sleep "${delay}"', "sleep 0").replace("sleep 2", "sleep 0")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    counter = tmp_path / "attempts"
    (bindir / "curl").write_text("#!/bin/bash\nexit 0\n")
    (bindir / "ollama").write_text(
        f"#!/bin/bash\nn=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        "[ $n -ge 3 ]\n"
    )
    for f in bindir.iterdir():
        f.chmod(0o755)
    pull = tmp_path / "pull.sh"
    pull.write_text(body)
    result = subprocess.run(
        ["bash", str(pull), "falcon"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bindir}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert counter.read_text().strip() == "3"
    assert result.stdout.count("failed, retrying") == 2
    assert "model falcon is ready" in result.stdout


def test_model_and_volume_follow_config() -> None:
    run = run_program(
        "staging",
        overrides={
            "llmModel": "llama3:8b",
            "llmRootVolumeGb": 300,
            "llmInstanceType": "g6.2xlarge",
        },
    )
    host = run.one(INSTANCE).inputs
    assert "OLLAMA_MODEL='llama3:8b'" in host["userData"]
    assert host["rootBlockDevice"]["volumeSize"] == 300
    assert host["instanceType"] == "g6.2xlarge"
    assert host["userDataReplaceOnChange"] is True
