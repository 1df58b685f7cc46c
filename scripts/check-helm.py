#!/usr/bin/env python3
"""Checks the Helm chart without a cluster, as CI does (scripts/check-helm.sh sets up the tools).

For the default values and every scenario in helm/switchboard/ci/:
  1. `helm lint --strict` with the real Helm library (helm-python-sdk embeds Helm's Go SDK);
  2. render the templates (install and upgrade) and validate every manifest against the
     Kubernetes JSON schemas, strictly (unknown fields are errors), for the oldest and newest
     Kubernetes versions the chart supports;
  3. check what the issue asks of each object (ports, probes, hook, security, secrets).
Then values that must be refused are refused (by values.schema.json or by the templates).
"""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "helm" / "switchboard"
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

failures = []


def fail(scenario, message):
    failures.append(f"{scenario}: {message}")


def render(values, is_upgrade=False):
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="sb", namespace="contact-center",
                                 is_install=not is_upgrade, is_upgrade=is_upgrade)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((path, document))
    return manifests, objects


def by_kind(objects, kind):
    return [o for _, o in objects if o["kind"] == kind]


def check_objects(scenario, values, manifests, objects):
    for path, obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_KINDS:
            endpoints = obj["spec"]["endpoints"]
            if endpoints[0]["port"] != "metrics" or endpoints[0]["path"] != "/metrics":
                fail(scenario, "the ServiceMonitor scrapes the metrics port's /metrics")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except Exception as error:  # a validation or a missing-schema error
                first = str(error).splitlines()[0] if str(error) else repr(error)
                fail(scenario, f"{path} {obj['kind']} on Kubernetes {version}: {first}")

    deployments = by_kind(objects, "Deployment")
    if len(deployments) != 1:
        fail(scenario, f"one Deployment, got {len(deployments)}")
        return
    pod = deployments[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if not pod["securityContext"].get("runAsNonRoot"):
        fail(scenario, "pods run as non-root")
    if not container["securityContext"].get("readOnlyRootFilesystem"):
        fail(scenario, "the root filesystem is read-only")
    probes = container["readinessProbe"], container["livenessProbe"], container["startupProbe"]
    if not all(probes):
        fail(scenario, "readiness, liveness and startup probes")
    tls = bool(values.get("tls", {}).get("existingSecret"))
    if not tls and "grpc" not in container["readinessProbe"]:
        fail(scenario, "readiness is the built-in gRPC probe on the health service")
    if container["livenessProbe"].get("httpGet", {}).get("port") != "metrics":
        fail(scenario, "liveness never depends on the database: the metrics port")
    grace = pod["terminationGracePeriodSeconds"]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    config = next(o for o in by_kind(objects, "ConfigMap"))
    origins = values.get("config", {}).get("corsAllowOrigins", [])
    if config["data"].get("SWITCHBOARD_CORS_ALLOW_ORIGIN", "") != ",".join(origins):
        fail(scenario, "config.corsAllowOrigins reaches SWITCHBOARD_CORS_ALLOW_ORIGIN, comma-separated")
    drain = int(config["data"]["SWITCHBOARD_DRAIN_TIMEOUT_SECS"])
    if grace <= sleep + drain:
        fail(scenario, f"grace {grace}s must exceed preStop {sleep}s + drain {drain}s")
    for env in container.get("env", []):
        if "value" in env and env["name"] in ("DATABASE_URL", "REDIS_URL") or "JWT" in env["name"] and "value" in env:
            fail(scenario, f"{env['name']} must come from the Secret, not a value")
    secret_refs = {e["name"] for e in container["env"] if "valueFrom" in e}
    cluster = bool(values.get("secretKeys", {}).get("redisClusterNodes"))
    redis = "SWITCHBOARD_REDIS_CLUSTER_NODES" if cluster else "REDIS_URL"
    if not {"DATABASE_URL", redis} <= secret_refs:
        fail(scenario, f"DATABASE_URL and {redis} come from the existing Secret")
    if {"REDIS_URL", "SWITCHBOARD_REDIS_CLUSTER_NODES"} <= secret_refs:
        fail(scenario, "one Redis: the cluster's nodes or the server's URL, not both")
    wait = values.get("config", {}).get("redisWaitReplicas")
    if config["data"].get("SWITCHBOARD_REDIS_WAIT_REPLICAS") != (None if wait is None else str(wait)):
        fail(scenario, "config.redisWaitReplicas reaches SWITCHBOARD_REDIS_WAIT_REPLICAS when set")
    wants_replicas = bool(values.get("secretKeys", {}).get("databaseReplicaUrls"))
    if ("SWITCHBOARD_DATABASE_REPLICA_URLS" in secret_refs) != wants_replicas:
        fail(scenario, "replica URLs come from the Secret exactly when secretKeys names them")
    text = "\n".join(manifests.values())
    if "postgres://" in text or "redis://" in text:
        fail(scenario, "no connection URL is written into a manifest")

    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    main = services.get("sb-switchboard")
    if main is None:
        fail(scenario, "the Service sb-switchboard")
    else:
        ports = {p["name"]: p for p in main["spec"]["ports"]}
        if ports.get("grpc", {}).get("appProtocol") != "grpc" or "metrics" not in ports:
            fail(scenario, "the Service has a grpc port (appProtocol grpc) and a metrics port")

    jobs = by_kind(objects, "Job")
    if values.get("migrations", {}).get("enabled", True):
        if len(jobs) != 1:
            fail(scenario, "a migration Job")
        else:
            hooks = jobs[0]["metadata"]["annotations"]["helm.sh/hook"]
            if hooks != "pre-install,pre-upgrade":
                fail(scenario, f"the migration Job is a pre-install/pre-upgrade hook, not {hooks}")
            if jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"] != ["migrate"]:
                fail(scenario, "the Job runs `switchboard migrate`")
        if config["data"]["SWITCHBOARD_NO_MIGRATE"] != "true":
            fail(scenario, "with the Job, the pods do not migrate")
    elif jobs:
        fail(scenario, "no migration Job when migrations are disabled")

    maintenance = values.get("maintenance", {})
    cronjobs = by_kind(objects, "CronJob")
    if maintenance.get("enabled", True):
        if len(cronjobs) != 1:
            fail(scenario, "a maintenance CronJob")
        else:
            job = cronjobs[0]["spec"]
            maint = job["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
            if maint["args"] != ["maintenance", "partitions"]:
                fail(scenario, "the CronJob runs `switchboard maintenance partitions`")
            if job.get("concurrencyPolicy") != "Forbid":
                fail(scenario, "one maintenance run at a time")
            if job["schedule"] != maintenance.get("schedule", "17 3 * * *"):
                fail(scenario, "maintenance.schedule is the CronJob's schedule")
            if "DATABASE_URL" not in {e["name"] for e in maint["env"] if "valueFrom" in e}:
                fail(scenario, "the CronJob's DATABASE_URL comes from the Secret")
            env = {e["name"]: e.get("value") for e in maint["env"]}
            for value, variable in [("auditRetentionMonths", "SWITCHBOARD_AUDIT_RETENTION_MONTHS"),
                                    ("callEventRetentionMonths", "SWITCHBOARD_CALL_EVENT_RETENTION_MONTHS"),
                                    ("callRetentionMonths", "SWITCHBOARD_CALL_RETENTION_MONTHS")]:
                wanted = maintenance.get(value)
                if env.get(variable) != (None if wanted is None else str(wanted)):
                    fail(scenario, f"maintenance.{value} reaches {variable} when set")
    elif cronjobs:
        fail(scenario, "no maintenance CronJob when maintenance is disabled")

    autoscaling = values.get("autoscaling", {}).get("enabled", True)
    if bool(by_kind(objects, "HorizontalPodAutoscaler")) != autoscaling:
        fail(scenario, "a HorizontalPodAutoscaler exactly when autoscaling is enabled")
    if autoscaling and "replicas" in deployments[0]["spec"]:
        fail(scenario, "with an autoscaler the Deployment leaves replicas to it")
    if not by_kind(objects, "PodDisruptionBudget"):
        fail(scenario, "a PodDisruptionBudget")


def must_refuse(scenario, values):
    try:
        render(values)
    except Exception as error:  # HelmValuesError / HelmRenderError
        print(f"  refused as expected: {scenario}: {str(error).splitlines()[0][:120]}")
        return
    fail(scenario, "these values were accepted")


def main():
    scenarios = sorted((CHART / "ci").glob("*.yaml"))
    for path in scenarios:
        scenario = path.name
        values = yaml.safe_load(path.read_text()) or {}
        report = helm.lint(str(CHART), values, strict=True, kube_version="v1.29.0")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        for message in problems + [{"error": e} for e in report.get("errors", []) or []]:
            fail(scenario, f"helm lint: {message}")
        for is_upgrade in (False, True):
            manifests, objects = render(values, is_upgrade=is_upgrade)
            check_objects(scenario, values, manifests, objects)
        print(f"  {scenario}: linted; {len(objects)} objects rendered and validated")

    must_refuse("a replica count that is not a number", {"replicaCount": "three"})
    must_refuse("a database URL written into values", {"databaseUrl": "postgres://u:p@db/sb"})
    must_refuse("a CORS origin with a path", {"config": {"corsAllowOrigins": ["https://desk.example.com/app"]}})
    must_refuse("a grace period shorter than the drain", {"terminationGracePeriodSeconds": 10})
    must_refuse("RS256 without a JWKS", {"auth": {"algorithm": "RS256"}})
    must_refuse("an unknown pull policy", {"image": {"pullPolicy": "Sometimes"}})
    must_refuse("a Redis prefix with a hash tag's brace", {"config": {"redisPrefix": "{sb}:"}})
    must_refuse("a negative count of Redis replicas to wait for", {"config": {"redisWaitReplicas": -1}})
    must_refuse("an audit retention of no months", {"maintenance": {"auditRetentionMonths": 0}})
    must_refuse("a call-event retention of no months", {"maintenance": {"callEventRetentionMonths": 0}})
    must_refuse("a call retention of no months", {"maintenance": {"callRetentionMonths": 0}})

    if failures:
        print("Helm chart check failed:")
        for failure in failures:
            print(f"  - {failure}")
        sys.exit(1)
    print(f"Helm chart: {len(scenarios)} scenarios linted, rendered and validated; bad values refused")


if __name__ == "__main__":
    main()
