"""The fake API server, seen through the real client library (lightkube's AsyncClient) and,
where lightkube cannot say what went over the wire, through plain HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.types import OnErrorAction, OnErrorResult, PatchType, on_error_retry

from tests.kubernetes.fake import FakeApiServer, kubeconfig
from tests.kubernetes.fake import manifests as m
from tests.kubernetes.fake.resources import DEPLOYMENTS

T = TypeVar("T")


@pytest.fixture
async def server() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as running:
        yield running


@pytest.fixture
async def client(server: FakeApiServer) -> AsyncIterator[AsyncClient]:
    lightkube = server.client()
    yield lightkube
    await lightkube.close()


@pytest.fixture
async def http(server: FakeApiServer) -> AsyncIterator[httpx2.AsyncClient]:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx2.AsyncClient(base_url=server.url, headers=headers) as raw:
        yield raw


async def take(stream: AsyncIterable[T], count: int, timeout: float = 5.0) -> list[T]:
    """The first ``count`` items of a (watch) stream, within ``timeout`` seconds."""
    found: list[T] = []
    iterator = aiter(stream)
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                found.append(await anext(iterator))
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]
    return found


async def make_pod(client: AsyncClient, name: str, **labels: str) -> Pod:
    created: Pod = await client.create(Pod.from_dict(m.pod(name, labels=labels or {"app": name})))
    return created


# -- basics ----------------------------------------------------------------------------------


async def test_discovery_version_and_health_answer_as_a_real_server(
    server: FakeApiServer, http: httpx2.AsyncClient
) -> None:
    version = (await http.get("/version")).json()
    assert version["gitVersion"] == "v1.37.0" and version["major"] == "1"
    assert (await http.get("/api")).json()["versions"] == ["v1"]
    groups = {g["name"]: g for g in (await http.get("/apis")).json()["groups"]}
    assert groups["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    apps = {r["name"]: r for r in (await http.get("/apis/apps/v1")).json()["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale" and "watch" in apps["deployments"]["verbs"]
    core = {r["name"] for r in (await http.get("/api/v1")).json()["resources"]}
    assert {"pods", "pods/status", "services", "events", "namespaces", "endpoints"} <= core
    async with httpx2.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/healthz")).text == "ok"
        assert (await anonymous.get("/readyz")).status_code == 200


async def test_a_request_without_the_token_is_unauthorized(server: FakeApiServer) -> None:
    config = KubeConfig.from_dict(
        {**_kubeconfig(server), "users": [{"name": kubeconfig.USER, "user": {"token": "wrong"}}]}
    )
    async with AsyncClient(config) as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.get(Deployment, "web")
    assert (refused.value.status.code, refused.value.status.reason) == (401, "Unauthorized")
    assert server.requests[-1].status == 401


async def test_a_kubeconfig_file_reaches_the_server_with_namespace_and_token(
    server: FakeApiServer, tmp_path: Path
) -> None:
    path = server.write_kubeconfig(tmp_path, namespace="kube-system")
    config = KubeConfig.from_file(path)
    assert config.get().cluster.server == server.url
    async with AsyncClient(config) as from_file:
        assert from_file.namespace == "kube-system"
        await from_file.create(Pod.from_dict(m.pod("p", namespace="kube-system")))
    assert server.requests[-1].namespace == "kube-system"


# -- CRUD and errors -------------------------------------------------------------------------


async def test_create_get_replace_and_delete_keep_server_fields(client: AsyncClient) -> None:
    created = await client.create(Deployment.from_dict(m.deployment("web")))
    meta = created.metadata
    assert (
        meta.uid and meta.creationTimestamp and meta.generation == 1 and meta.namespace == "default"
    )
    assert created.spec.strategy.type == "RollingUpdate"  # defaulted as a real server does
    assert created.spec.template.spec.containers[0].imagePullPolicy == "IfNotPresent"
    fetched = await client.get(Deployment, "web")
    assert fetched.metadata.resourceVersion == meta.resourceVersion

    fetched.spec.replicas = 5
    replaced = await client.replace(fetched)
    assert replaced.metadata.generation == 2
    assert int(replaced.metadata.resourceVersion) > int(meta.resourceVersion)
    assert (
        replaced.metadata.uid == meta.uid
        and replaced.metadata.creationTimestamp == meta.creationTimestamp
    )

    fetched.spec.replicas = 6  # still carrying the old resourceVersion
    with pytest.raises(ApiError) as stale:
        await client.replace(fetched)
    assert (stale.value.status.code, stale.value.status.reason) == (409, "Conflict")
    assert "the object has been modified" in stale.value.status.message

    await client.delete(Deployment, "web")
    with pytest.raises(ApiError) as gone:
        await client.get(Deployment, "web")
    status = gone.value.status
    assert (status.code, status.reason, status.message) == (
        404,
        "NotFound",
        'deployments.apps "web" not found',
    )
    assert status.details.kind == "deployments" and status.details.group == "apps"


async def test_a_second_create_is_already_exists_and_generate_name_makes_names(
    client: AsyncClient,
) -> None:
    await client.create(Deployment.from_dict(m.deployment("web")))
    with pytest.raises(ApiError) as twice:
        await client.create(Deployment.from_dict(m.deployment("web")))
    assert (twice.value.status.code, twice.value.status.reason) == (409, "AlreadyExists")
    body = m.pod("ignored")
    body["metadata"] = {"generateName": "worker-", "labels": {"app": "w"}}
    made = await client.create(Pod.from_dict(body))
    assert (
        made.metadata.name.startswith("worker-") and len(made.metadata.name) == len("worker-") + 5
    )


async def test_a_real_server_keeps_status_and_spec_apart(client: AsyncClient) -> None:
    await client.create(Deployment.from_dict(m.deployment("web")))
    through_main = await client.patch(
        Deployment, "web", {"status": {"replicas": 7}}, patch_type=PatchType.MERGE
    )
    assert through_main.status.replicas is None and through_main.metadata.generation == 1
    through_status = await client.patch(
        Deployment.Status, "web", {"status": {"replicas": 7}, "spec": {"replicas": 9}},
        patch_type=PatchType.MERGE,
    )  # fmt: skip
    assert through_status.status.replicas == 7
    assert through_status.spec.replicas == 2 and through_status.metadata.generation == 1
    labelled = await client.patch(
        Deployment, "web", {"metadata": {"labels": {"tier": "front"}}}, patch_type=PatchType.MERGE
    )
    assert labelled.metadata.generation == 1  # metadata-only: no new generation


def _invalid_cases() -> list[Any]:
    mismatched = m.deployment("web")
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    no_image = m.deployment("web", containers=[{"name": "app"}])
    bad_label = m.deployment("web", labels={"app": "not ok!"})
    bad_name = m.deployment("Web_1")
    no_containers = m.deployment("web")
    no_containers["spec"]["template"]["spec"]["containers"] = []
    never_restart = m.deployment("web")
    never_restart["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    both_zero = m.deployment(
        "web", strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}
    )
    return [
        pytest.param(
            mismatched, "spec.template.metadata.labels", "`selector` does not match", id="selector"
        ),
        pytest.param(
            no_image, "spec.template.spec.containers[0].image", "Required value", id="no-image"
        ),
        pytest.param(bad_label, "metadata.labels", "a valid label must be", id="label-value"),
        pytest.param(bad_name, "metadata.name", "RFC 1123 subdomain", id="name"),
        pytest.param(
            no_containers, "spec.template.spec.containers", "Required value", id="no-containers"
        ),
        pytest.param(
            never_restart, "spec.template.spec.restartPolicy", "Unsupported value", id="restart"
        ),
        pytest.param(
            both_zero, "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0", id="fenceposts"
        ),
    ]


@pytest.mark.parametrize(("body", "field", "words"), _invalid_cases())
async def test_an_invalid_object_is_refused_as_invalid(
    client: AsyncClient, server: FakeApiServer, body: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ApiError) as refused:
        await client.create(Deployment.from_dict(body))
    status = refused.value.status
    assert (status.code, status.reason, status.details.kind) == (422, "Invalid", "Deployment")
    assert status.message.startswith(f'Deployment.apps "{body["metadata"]["name"]}" is invalid: ')
    assert any(c.field == field and words in c.message for c in status.details.causes), status
    assert server.store.count(DEPLOYMENTS) == 0


async def test_what_the_schema_rejects_is_refused_as_a_real_server_refuses_it(
    http: httpx2.AsyncClient,
) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    unknown = m.deployment("web", replicaz=3)
    answer = await http.post(path, json=unknown)
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
    assert 'unknown field "spec.replicaz"' in answer.json()["message"]
    wrong_type = m.deployment("web")
    wrong_type["spec"]["replicas"] = "three"
    answer = await http.post(path, json=wrong_type)
    assert (answer.status_code, answer.json()["reason"]) == (400, "BadRequest")
    assert "spec.replicas" in answer.json()["message"]
    bad_policy = m.deployment(
        "web", containers=[m.container("app", "x:1", imagePullPolicy="Sometimes")]
    )
    answer = await http.post(path, json=bad_policy)
    assert (answer.status_code, answer.json()["reason"]) == (422, "Invalid")
    assert 'Unsupported value: "Sometimes"' in answer.json()["message"]


async def test_immutable_and_mismatched_fields_are_refused(
    client: AsyncClient, http: httpx2.AsyncClient
) -> None:
    await client.create(Deployment.from_dict(m.deployment("web")))
    with pytest.raises(ApiError) as moved:
        await client.patch(
            Deployment, "web",
            {"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}},
                      "template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}},
        )  # fmt: skip
    assert moved.value.status.code == 422 and "field is immutable" in moved.value.status.message
    other = m.deployment("web2", namespace="kube-system")
    answer = await http.post("/apis/apps/v1/namespaces/default/deployments", json=other)
    assert (answer.status_code, answer.json()["reason"]) == (400, "BadRequest")
    assert "does not match the namespace" in answer.json()["message"]
    answer = await http.post(
        "/api/v1/namespaces/nowhere/pods", json=m.pod("p", namespace="nowhere")
    )
    assert (answer.status_code, answer.json()["message"]) == (404, 'namespaces "nowhere" not found')


async def test_errors_are_status_objects_with_the_exact_content_type(
    http: httpx2.AsyncClient,
) -> None:
    unknown = await http.get("/apis/apps/v1/namespaces/default/widgets")
    item_post = await http.post("/apis/apps/v1/namespaces/default/deployments/web", json={})
    patch = await http.patch(
        "/apis/apps/v1/namespaces/default/deployments/web",
        content=b"{}",
        headers={"Content-Type": "application/xml"},
    )
    for answer, code, reason in (
        (unknown, 404, "NotFound"),
        (item_post, 405, "MethodNotAllowed"),
        (patch, 415, "UnsupportedMediaType"),
    ):
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert (answer.status_code, body["kind"], body["apiVersion"], body["status"], body["reason"], body["code"]) == (
            code, "Status", "v1", "Failure", reason, code,
        )  # fmt: skip


# -- lists and selectors ---------------------------------------------------------------------


async def test_lists_filter_by_label_and_field_selectors(client: AsyncClient) -> None:
    await make_pod(client, "a1", app="a", tier="front")
    await make_pod(client, "a2", app="a", tier="back")
    await make_pod(client, "b1", app="b")
    await client.create(Namespace.from_dict(m.namespace("other")))
    await client.create(Pod.from_dict(m.pod("c1", namespace="other", labels={"app": "a"})))

    async def names(**query: Any) -> list[str]:
        return sorted([p.metadata.name async for p in client.list(Pod, **query)])

    assert await names(labels={"app": "a"}) == ["a1", "a2"]
    assert await names(labels={"app": "a", "tier": "front"}) == ["a1"]
    assert await names(labels={"tier": None}) == ["a1", "a2"]  # exists
    from lightkube import operators as op

    assert await names(labels={"tier": op.not_exists()}) == ["b1"]
    assert await names(labels={"tier": op.not_equal("front")}) == [
        "a2",
        "b1",
    ]  # lacking the key counts
    assert await names(labels={"app": op.in_(["a", "b"])}) == ["a1", "a2", "b1"]
    assert await names(labels={"app": op.not_in(["a"])}) == ["b1"]
    assert await names(fields={"metadata.name": "a2"}) == ["a2"]
    assert await names(fields={"metadata.name": op.not_equal("a2"), "status.phase": "Pending"}) == [
        "a1",
        "b1",
    ]
    assert await names(namespace="*", labels={"app": "a"}) == ["a1", "a2", "c1"]
    listing = client.list(Pod, chunk_size=2)
    assert [p.metadata.name async for p in listing] == ["a1", "a2", "b1"]
    assert int(listing.resourceVersion) > 0


async def test_a_bad_selector_is_a_bad_request(client: AsyncClient) -> None:
    with pytest.raises(ApiError) as refused:
        [p async for p in client.list(Pod, fields={"spec.image": "x"})]
    assert (refused.value.status.code, refused.value.status.message) == (
        400,
        "field label not supported: spec.image",
    )


# -- watches ---------------------------------------------------------------------------------


async def test_a_watch_from_a_resource_version_replays_exactly_the_missed_events(
    client: AsyncClient,
) -> None:
    await make_pod(client, "a")
    listing = client.list(Pod)
    assert [p.metadata.name async for p in listing] == ["a"]
    since = listing.resourceVersion
    await make_pod(client, "b")
    await client.patch(
        Pod, "a", {"metadata": {"labels": {"seen": "yes"}}}, patch_type=PatchType.MERGE
    )
    await client.delete(Pod, "b")
    await make_pod(client, "c")
    events = await take(client.watch(Pod, resource_version=since), 4)
    assert [(kind, pod.metadata.name) for kind, pod in events] == [
        ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c"),
    ]  # fmt: skip
    versions = [int(pod.metadata.resourceVersion) for _, pod in events]
    assert versions == sorted(versions) and versions[0] > int(since)


async def test_a_watch_without_a_resource_version_starts_with_the_current_objects(
    client: AsyncClient,
) -> None:
    await make_pod(client, "a")
    await make_pod(client, "b")
    stream = client.watch(Pod)
    first = await take(stream, 2)
    assert sorted((k, p.metadata.name) for k, p in first) == [("ADDED", "a"), ("ADDED", "b")]


async def test_a_selected_watch_sees_relabelling_as_added_and_deleted(
    client: AsyncClient, server: FakeApiServer
) -> None:
    await make_pod(client, "a", app="a", role="x")
    since = str(server.store.rv)
    await client.patch(
        Pod, "a", {"metadata": {"labels": {"role": "y"}}}, patch_type=PatchType.MERGE
    )
    await client.patch(
        Pod, "a", {"metadata": {"labels": {"role": "x"}}}, patch_type=PatchType.MERGE
    )
    events = await take(client.watch(Pod, labels={"role": "y"}, resource_version=since), 2)
    assert [(k, p.metadata.labels["role"]) for k, p in events] == [("ADDED", "y"), ("DELETED", "x")]


async def test_an_expired_resource_version_is_an_error_event_inside_a_200_stream(
    client: AsyncClient, server: FakeApiServer, http: httpx2.AsyncClient
) -> None:
    await make_pod(client, "a")
    old = "1"
    server.compact()
    async with http.stream(
        "GET", "/api/v1/namespaces/default/pods", params={"watch": "1", "resourceVersion": old}
    ) as raw:
        assert raw.status_code == 200
        lines = [json.loads(line) async for line in raw.aiter_lines() if line]
    assert lines == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: 1 ({server.store.rv})", "reason": "Expired", "code": 410,
    }}]  # fmt: skip
    with pytest.raises(ApiError) as expired:
        await take(client.watch(Pod, resource_version=old), 1)
    assert (expired.value.status.code, expired.value.status.reason) == (410, "Expired")
    # lightkube's on_error_retry answers a 410 by watching afresh: the current state, as ADDED.
    events = await take(client.watch(Pod, resource_version=old, on_error=on_error_retry), 1)
    assert [(k, p.metadata.name) for k, p in events] == [("ADDED", "a")]


async def test_an_expired_resource_version_can_also_be_a_plain_http_410(
    client: AsyncClient, server: FakeApiServer, http: httpx2.AsyncClient
) -> None:
    await make_pod(client, "a")
    server.compact()
    server.watch_expiry_as_http = True
    answer = await http.get(
        "/api/v1/namespaces/default/pods", params={"watch": "true", "resourceVersion": "1"}
    )
    assert answer.headers["content-type"] == "application/json"
    assert (answer.status_code, answer.json()["reason"], answer.json()["code"]) == (
        410,
        "Expired",
        410,
    )
    # lightkube does not turn a watch's HTTP error into ApiError (it calls raise_for_status on
    # the stream itself), so its on_error_retry would retry the same resourceVersion forever.
    with pytest.raises(httpx2.HTTPStatusError) as plain:
        await take(client.watch(Pod, resource_version="1"), 1)
    assert not isinstance(plain.value, ApiError) and plain.value.response.status_code == 410


async def test_a_dropped_watch_connection_surfaces_or_resumes_without_losing_events(
    client: AsyncClient, server: FakeApiServer
) -> None:
    await make_pod(client, "a")
    raising = client.watch(Pod)
    iterator = aiter(raising)
    assert (await anext(iterator))[0] == "ADDED"
    assert server.drop_watches() == 1
    with pytest.raises(httpx2.TransportError):
        async with asyncio.timeout(5):
            await anext(iterator)
    await iterator.aclose()  # type: ignore[attr-defined]

    retries: list[Exception] = []

    def retry(error: Exception, count: int) -> OnErrorResult:
        retries.append(error)
        return OnErrorResult(OnErrorAction.RETRY)

    pod_a_version: list[str] = []
    resuming = aiter(client.watch(Pod, on_error=retry))
    try:
        async with asyncio.timeout(5):
            _, first = await anext(resuming)
            assert first.metadata.name == "a"
            pod_a_version.append(first.metadata.resourceVersion)
            await _until(lambda: server.open_watches == 1)
            server.drop_watches()
            await make_pod(client, "b")  # made while the client is disconnected
            kind, pod = await anext(resuming)
    finally:
        await resuming.aclose()  # type: ignore[attr-defined]
    assert (kind, pod.metadata.name) == ("ADDED", "b")  # not "a" again: it resumed from its rv
    assert len(retries) == 1 and isinstance(retries[0], httpx2.TransportError)
    resumed = [r for r in server.requests if r.verb == "watch"][-1]
    assert resumed.params["resourceVersion"] == pod_a_version[0]


async def test_timeout_seconds_ends_the_stream_and_lightkube_opens_the_next(
    client: AsyncClient, server: FakeApiServer
) -> None:
    stream = aiter(client.watch(Pod, server_timeout=1))
    # The generator only reconnects while someone waits on it: wait on it in a task.
    waiting = asyncio.ensure_future(anext(stream))
    try:
        await _until(lambda: len([r for r in server.requests if r.verb == "watch"]) == 2, 5)
        await make_pod(client, "late")
        kind, pod = await asyncio.wait_for(waiting, 5)
    finally:
        waiting.cancel()
        await stream.aclose()  # type: ignore[attr-defined]
    assert (kind, pod.metadata.name) == ("ADDED", "late")
    first, second = [r for r in server.requests if r.verb == "watch"][:2]
    assert first.params["timeoutSeconds"] == second.params["timeoutSeconds"] == "1"
    assert first.status == 200


async def test_bookmarks_come_when_asked_for(
    server: FakeApiServer, http: httpx2.AsyncClient, client: AsyncClient
) -> None:
    server.bookmark_interval = 0.05
    await make_pod(client, "a")
    params = {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "resourceVersion": str(server.store.rv),
    }
    async with http.stream("GET", "/api/v1/namespaces/default/pods", params=params) as raw:
        assert raw.headers["content-type"] == "application/json"
        assert raw.headers.get("transfer-encoding") == "chunked"
        lines = aiter(raw.aiter_lines())
        async with asyncio.timeout(5):
            first = json.loads(await anext(lines))
            await make_pod(client, "b")
            second = json.loads(await anext(lines))
            while second["type"] == "BOOKMARK":
                second = json.loads(await anext(lines))
    assert first == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": first["object"]["metadata"]["resourceVersion"]},
        },
    }
    assert second["type"] == "ADDED" and second["object"]["metadata"]["name"] == "b"
    initial = {
        "watch": "1",
        "sendInitialEvents": "true",
        "allowWatchBookmarks": "true",
        "resourceVersionMatch": "NotOlderThan",
    }
    async with http.stream("GET", "/api/v1/namespaces/default/pods", params=initial) as raw:
        events = [json.loads(line) for line in await take(raw.aiter_lines(), 3)]
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# -- patches and subresources ------------------------------------------------------------------


async def test_merge_strategic_and_json_patches_treat_lists_as_kubernetes_does(
    client: AsyncClient,
) -> None:
    two = [
        m.container("app", "shop:v1", env=[{"name": "A", "value": "1"}]),
        m.container("side", "side:v1", port=9090),
    ]
    await client.create(Deployment.from_dict(m.deployment("web", containers=two)))
    strategic = await client.patch(
        Deployment, "web",
        {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "shop:v2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 8081}]}
        ]}}}},
        patch_type=PatchType.STRATEGIC,
    )  # fmt: skip
    app, side = strategic.spec.template.spec.containers
    assert (app.name, app.image, side.name, side.image) == ("app", "shop:v2", "side", "side:v1")
    assert [e.name for e in app.env] == ["A", "B"]  # merged by name
    assert sorted(p.containerPort for p in app.ports) == [8080, 8081]  # merged by containerPort
    deleted = await client.patch(
        Deployment, "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}},
        patch_type=PatchType.STRATEGIC,
    )  # fmt: skip
    assert [c.name for c in deleted.spec.template.spec.containers] == ["app"]
    merged = await client.patch(
        Deployment, "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "solo", "image": "solo:v1"}]}}}},
        patch_type=PatchType.MERGE,
    )  # fmt: skip
    assert [c.name for c in merged.spec.template.spec.containers] == [
        "solo"
    ]  # a merge patch replaces lists
    patched = await client.patch(
        Deployment, "web",
        [{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 4}],
        patch_type=PatchType.JSON,
    )  # fmt: skip
    assert patched.spec.replicas == 4
    with pytest.raises(ApiError) as failed:
        await client.patch(
            Deployment,
            "web",
            [{"op": "test", "path": "/spec/replicas", "value": 2}],
            patch_type=PatchType.JSON,
        )
    assert failed.value.status.code == 422


async def test_server_side_apply_creates_then_merges(client: AsyncClient) -> None:
    applied = await client.apply(Deployment.from_dict(m.deployment("web")), field_manager="phoenix")
    assert applied.metadata.generation == 1
    again = await client.apply(
        Deployment.from_dict(m.deployment("web", replicas=3)), field_manager="phoenix"
    )
    assert again.spec.replicas == 3 and again.metadata.generation == 2


async def test_the_scale_subresource_reads_and_sets_replicas(
    client: AsyncClient, server: FakeApiServer
) -> None:
    await client.create(Deployment.from_dict(m.deployment("web", replicas=2)))
    scale = await client.get(Deployment.Scale, "web")
    assert (scale.kind, scale.apiVersion, scale.spec.replicas, scale.status.selector) == (
        "Scale",
        "autoscaling/v1",
        2,
        "app=web",
    )
    patched = await client.patch(
        Deployment.Scale, "web", {"spec": {"replicas": 5}}, patch_type=PatchType.MERGE
    )
    assert patched.spec.replicas == 5
    deployment = await client.get(Deployment, "web")
    assert (deployment.spec.replicas, deployment.metadata.generation) == (5, 2)
    scale.spec.replicas = 1  # stale resourceVersion
    with pytest.raises(ApiError) as stale:
        await client.replace(scale, "web")
    assert stale.value.status.code == 409
    with pytest.raises(ApiError) as negative:
        await client.patch(
            Deployment.Scale, "web", {"spec": {"replicas": -1}}, patch_type=PatchType.MERGE
        )
    assert (negative.value.status.code, negative.value.status.reason) == (422, "Invalid")
    assert ("apps", "deployments/scale", "patch") in server.rbac_used()


# -- the request log and fault injection -----------------------------------------------------


async def test_the_request_log_names_every_request_and_the_rbac_it_needs(
    client: AsyncClient, server: FakeApiServer
) -> None:
    server.clear_requests()
    await client.create(Deployment.from_dict(m.deployment("web")))
    await client.get(Deployment, "web")
    [d async for d in client.list(Deployment, labels={"app": "web"})]
    await client.patch(Deployment, "web", {"spec": {"replicas": 3}})
    await client.patch(Deployment.Scale, "web", {"spec": {"replicas": 4}})
    await client.delete(Deployment, "web")
    record = server.requests[2]
    assert (record.method, record.verb, record.group, record.version, record.resource) == (
        "GET",
        "list",
        "apps",
        "v1",
        "deployments",
    )
    assert (record.namespace, record.name, record.params["labelSelector"], record.status) == (
        "default",
        None,
        "app=web",
        200,
    )
    assert server.rbac_used() == {
        ("apps", "deployments", "create"), ("apps", "deployments", "get"), ("apps", "deployments", "list"),
        ("apps", "deployments", "patch"), ("apps", "deployments/scale", "patch"),
        ("apps", "deployments", "delete"),
    }  # fmt: skip


async def test_a_forbidden_verb_is_answered_as_rbac_would(
    client: AsyncClient, server: FakeApiServer
) -> None:
    server.denied.add(("apps", "deployments", "delete"))
    await client.create(Deployment.from_dict(m.deployment("web")))
    with pytest.raises(ApiError) as refused:
        await client.delete(Deployment, "web")
    assert (refused.value.status.code, refused.value.status.reason) == (403, "Forbidden")
    assert (
        'cannot delete resource "deployments" in API group "apps"' in refused.value.status.message
    )


async def test_injected_failures_answer_the_next_requests(
    client: AsyncClient, server: FakeApiServer
) -> None:
    server.fail_next(2, 503, resource="pods")
    for _ in range(2):
        with pytest.raises(ApiError) as failing:
            await make_pod(client, "a")
        assert (failing.value.status.code, failing.value.status.reason) == (
            503,
            "ServiceUnavailable",
        )
    await make_pod(client, "a")
    assert [r.status for r in server.requests[-3:]] == [503, 503, 201]


async def test_a_paused_resource_holds_its_requests_until_resumed(
    client: AsyncClient, server: FakeApiServer
) -> None:
    await make_pod(client, "a")
    with server.paused("pods"):
        pending = asyncio.create_task(client.get(Pod, "a"))
        await _until(lambda: server.requests[-1].verb == "get")
        await client.create(Deployment.from_dict(m.deployment("web")))  # other resources answer
        assert not pending.done()
    assert (await asyncio.wait_for(pending, 5)).metadata.name == "a"


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _kubeconfig(server: FakeApiServer) -> dict[str, Any]:
    return kubeconfig.document(server.url, server.token)


async def test_expired_watches_make_lightkube_start_over_from_the_current_state(
    client: AsyncClient, server: FakeApiServer
) -> None:
    await make_pod(client, "a")
    failures: list[Exception] = []

    def retry(error: Exception, count: int) -> OnErrorResult:
        failures.append(error)
        return OnErrorResult(OnErrorAction.RETRY)

    stream = aiter(client.watch(Pod, on_error=retry))
    try:
        async with asyncio.timeout(5):
            assert (await anext(stream))[1].metadata.name == "a"
            await _until(lambda: server.open_watches == 1)
            await make_pod(client, "b")
            assert (await anext(stream))[1].metadata.name == "b"
            assert server.expire_watches() == 1  # compacted, then cut: the reconnect meets a 410
            replayed = [await anext(stream), await anext(stream)]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    # The transport error, then the 410 ERROR event as an ApiError; then a fresh watch
    # without a resourceVersion, which starts with every current object as ADDED.
    assert isinstance(failures[0], httpx2.TransportError)
    assert isinstance(failures[1], ApiError) and failures[1].status.code == 410
    assert sorted((k, p.metadata.name) for k, p in replayed) == [("ADDED", "a"), ("ADDED", "b")]
    watches = [r.params.get("resourceVersion") for r in server.requests if r.verb == "watch"]
    assert watches[0] is None and watches[1] is not None and watches[2] is None


async def test_deletecollection_deletes_what_the_selector_selects(client: AsyncClient) -> None:
    for name, app in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        await make_pod(client, name, app=app)
    await client.deletecollection(Pod)  # every pod in the namespace: none is scheduled, all go
    assert [p async for p in client.list(Pod)] == []
