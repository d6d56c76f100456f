"""The Omaha server as Flatcar's update_engine and Railyard's agent see it, over real HTTP on 127.0.0.1."""

import base64
import hashlib
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from harness.errors import ConfigError, UpdateError
from harness.omaha import OmahaServer
from harness.omaha_protocol import (
    EVENT_DOWNLOAD_FINISHED,
    EVENT_DOWNLOAD_STARTED,
    EVENT_UPDATE_COMPLETE,
    FLATCAR_APP_ID,
    RAILYARD_APP_ID,
    RESULT_ERROR,
    RESULT_SUCCESS,
    RESULT_SUCCESS_REBOOT,
    is_newer,
    parse_request,
    version_key,
)

MACHINE = "0123456789abcdef0123456789abcdef"


def update_engine_request(
    *,
    app_id=FLATCAR_APP_ID,
    version="3510.2.0",
    track="stable",
    machine_id=MACHINE,
    body='        <ping active="1"></ping>\n        <updatecheck></updatecheck>\n'
    '        <event eventtype="3" eventresult="2" previousversion="3374.2.0"></event>\n',
):
    """A request shaped exactly as update_engine's GetRequestXml builds it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" '
        'installsource="scheduler" ismachine="1">\n'
        '    <os version="Chateau" platform="CoreOS" sp="3510.2.0_x86_64"></os>\n'
        f'    <app appid="{app_id}" version="{version}" track="{track}" '
        'bootid="{fc4bbd37-7a3f-4b65-9a9c-1a8ef1b7c0d2}" oem="qemu" oemversion="" alephversion="3510.2.0" '
        f'machineid="{machine_id}" machinealias="" lang="en-US" board="amd64-usr" '
        'hardware_class="" delta_okay="false" >\n'
        f"{body}"
        "    </app>\n"
        "</request>\n"
    ).encode()


def post(url, data):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "text/xml"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return ET.fromstring(answer.read())


def get(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "flatcar_test_update.gz"
    path.write_bytes(bytes(range(256)) * 1000)
    return path


@pytest.fixture
def server():
    with OmahaServer(FLATCAR_APP_ID, app_ids=(RAILYARD_APP_ID,)) as omaha:
        yield omaha


def test_versions_compare_numerically():
    assert is_newer("1.10.0", "1.9.0")
    assert not is_newer("1.9.0", "1.10.0")
    assert is_newer("3510.2.1", "3510.2.0")
    assert version_key("1.2") == version_key("1.2.0")
    assert is_newer("2.0.0", "2.0.0-rc1")
    assert is_newer("2.0.0-rc2", "2.0.0-rc1")
    assert is_newer("2.0.0-rc10", "2.0.0-rc9")
    assert is_newer("2.0.0-rc1", "1.99.0")
    assert not is_newer("3510.2.0+nightly-20240101", "3510.2.0")
    assert sorted(["1.10.0", "1.2.0", "1.9.9", "10.0"], key=version_key) == [
        "1.2.0",
        "1.9.9",
        "1.10.0",
        "10.0",
    ]


def test_parse_update_engine_request():
    request = parse_request(update_engine_request(), now=1000.0)
    assert request.protocol == "3.0"
    assert request.os["platform"] == "CoreOS"
    (app,) = request.apps
    assert (app.app_id, app.version, app.track, app.machine_id) == (
        FLATCAR_APP_ID,
        "3510.2.0",
        "stable",
        MACHINE,
    )
    assert app.updatecheck
    assert app.ping
    (event,) = app.events
    assert (event.event_type, event.event_result, event.previous_version) == (3, 2, "3374.2.0")
    assert event.error_code is None
    assert event.timestamp == 1000.0
    assert event.is_rebooted_into_update


@pytest.mark.parametrize(
    "body",
    [b"not xml", b"<response/>", b'<request protocol="2.0"><app appid="x"/></request>'],
)
def test_bad_requests_are_rejected(body):
    with pytest.raises(UpdateError):
        parse_request(body)


def test_update_offer_has_everything_update_engine_requires(server, payload):
    published = server.publish(FLATCAR_APP_ID, "stable", "3511.0.0", payload, signature=b"sig")
    root = post(server.url, update_engine_request())
    assert root.tag == "response"
    assert root.get("protocol") == "3.0"
    assert root.get("server") == "railyard"
    assert int(root.find("daystart").get("elapsed_seconds")) >= 0
    # The XPaths and attributes update_engine's OmahaRequestAction::ParseResponse insists on.
    check = root.find("app/updatecheck")
    assert check.get("status") == "ok"
    (url,) = root.findall("app/updatecheck/urls/url")
    assert url.get("codebase") == f"http://127.0.0.1:{server.port}/payloads/{published.payload_id}/"
    manifest = root.find("app/updatecheck/manifest")
    assert manifest.get("version") == "3511.0.0"
    package = root.find("app/updatecheck/manifest/packages/package")
    assert package.get("name") == payload.name
    assert int(package.get("size")) == payload.stat().st_size > 0
    data = payload.read_bytes()
    assert package.get("hash") == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert package.get("hash_sha256") == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert package.get("required") == "true"
    assert package.get("railyard_signature") == f"{payload.name}.sig"
    actions = [
        a for a in root.findall("app/updatecheck/manifest/actions/action") if a.get("event") == "postinstall"
    ]
    assert len(actions) == 1
    assert actions[0].get("sha256") == package.get("hash_sha256")
    assert actions[0].get("DisablePayloadBackoff") == "true"
    # The request's ping and event are acknowledged.
    assert root.find("app/ping").get("status") == "ok"
    assert root.find("app/event").get("status") == "ok"
    assert root.find("app").get("status") == "ok"


def test_noupdate_when_current_or_newer(server, payload):
    server.publish(FLATCAR_APP_ID, "stable", "3510.2.0", payload)
    assert post(server.url, update_engine_request()).find("app/updatecheck").get("status") == "noupdate"
    assert post(server.url, update_engine_request(version="3600.0.0")).find("app/updatecheck").get(
        "status"
    ) == ("noupdate")
    assert server.requests[-1].updatechecks == ((FLATCAR_APP_ID, "3600.0.0", "stable", "noupdate"),)


def test_newest_version_of_the_track_is_offered(server, payload):
    server.publish(FLATCAR_APP_ID, "stable", "3510.10.0", payload)
    server.publish(FLATCAR_APP_ID, "stable", "3510.9.0", payload)
    server.publish(FLATCAR_APP_ID, "beta", "3600.1.0", payload)
    stable = post(server.url, update_engine_request(track="stable"))
    beta = post(server.url, update_engine_request(track="beta"))
    alpha = post(server.url, update_engine_request(track="alpha"))
    assert stable.find("app/updatecheck/manifest").get("version") == "3510.10.0"
    assert beta.find("app/updatecheck/manifest").get("version") == "3600.1.0"
    assert alpha.find("app/updatecheck").get("status") == "noupdate"
    server.unpublish(FLATCAR_APP_ID, "stable", "3510.10.0")
    again = post(server.url, update_engine_request(track="stable"))
    assert again.find("app/updatecheck/manifest").get("version") == "3510.9.0"


def test_unknown_application(server, payload):
    root = post(server.url, update_engine_request(app_id="{00000000-0000-0000-0000-000000000000}"))
    app = root.find("app")
    assert app.get("status") == "error-unknownApplication"
    assert app.find("updatecheck") is None


def test_app_id_matches_case_insensitively(server, payload):
    server.publish(FLATCAR_APP_ID, "stable", "9999.0.0", payload)
    root = post(server.url, update_engine_request(app_id=FLATCAR_APP_ID.upper()))
    assert root.find("app/updatecheck").get("status") == "ok"


def test_update_url_without_trailing_slash_and_host_header(server, payload):
    server.publish(FLATCAR_APP_ID, "stable", "9999.0.0", payload)
    root = post(server.url.rstrip("/"), update_engine_request())
    assert (
        root.find("app/updatecheck/urls/url").get("codebase").startswith(f"http://127.0.0.1:{server.port}/")
    )
    assert server.guest_url == f"http://127.0.0.1:{server.port}/v1/update/"  # through the forward


def test_payloads_can_be_named_at_an_address_the_guest_reaches_directly(server, payload):
    published = server.publish(FLATCAR_APP_ID, "stable", "9999.0.0", payload)
    server.serve_payloads_at("10.0.2.2")
    url = post(server.url, update_engine_request()).find("app/updatecheck/urls/url").get("codebase")
    assert url == f"http://10.0.2.2:{server.port}/payloads/{published.payload_id}/"
    server.serve_payloads_at(None)
    url = post(server.url, update_engine_request()).find("app/updatecheck/urls/url").get("codebase")
    assert url.startswith(f"http://127.0.0.1:{server.port}/")


def test_events_are_recorded_per_machine(server):
    for eventtype, result in ((EVENT_DOWNLOAD_STARTED, 1), (EVENT_DOWNLOAD_FINISHED, 1)):
        post(
            server.url,
            update_engine_request(body=f'<event eventtype="{eventtype}" eventresult="{result}"></event>'),
        )
    post(
        server.url,
        update_engine_request(
            machine_id="other", body='<event eventtype="3" eventresult="0" errorcode="268435466"></event>'
        ),
    )
    mine = server.events_for(MACHINE)
    assert [(e.event_type, e.event_result) for e in mine] == [(13, 1), (14, 1)]
    assert all(e.track == "stable" and e.version == "3510.2.0" and e.app_id == FLATCAR_APP_ID for e in mine)
    (theirs,) = server.events_for("other")
    assert theirs.is_error
    assert theirs.error_code == 268435466
    assert not theirs.is_rollback
    assert len(server.events) == 3


def test_rollback_event_is_recognised(server):
    post(
        server.url,
        update_engine_request(body='<updatecheck/><event eventtype="3" eventresult="0" errorcode="44"/>'),
    )
    (event,) = server.events
    assert event.is_rollback
    assert not event.is_rebooted_into_update


def test_wait_for_event_wakes_on_arrival(server):
    def later():
        time.sleep(0.3)
        post(server.url, update_engine_request(body='<event eventtype="3" eventresult="1"></event>'))

    threading.Thread(target=later).start()
    started = time.monotonic()
    event = server.wait_for_event((EVENT_UPDATE_COMPLETE, RESULT_SUCCESS), machine_id=MACHINE, timeout=10)
    assert event.is_update_applied
    assert time.monotonic() - started < 5
    # A predicate, and `after` to skip what was already seen.
    mark = len(server.events)
    with pytest.raises(
        UpdateError, match=r"no event 3/2 from machine .* within 0 s; events seen:\n  \(none\)"
    ):
        server.wait_for_event(
            (EVENT_UPDATE_COMPLETE, RESULT_SUCCESS_REBOOT), machine_id=MACHINE, timeout=0.2, after=mark
        )
    found = server.wait_for_event(lambda e: e.event_result == RESULT_SUCCESS, timeout=1)
    assert found == event
    with pytest.raises(UpdateError, match="event 3/1 from machine"):
        server.wait_for_event(lambda e: e.event_result == RESULT_ERROR, timeout=0.1)


def test_range_requests(server, payload):
    published = server.publish(
        RAILYARD_APP_ID, "stable", "2.0.0", payload, name="usr.img", signature=b"SIG\n"
    )
    base = f"http://127.0.0.1:{server.port}/payloads/{published.payload_id}/"
    data = payload.read_bytes()
    size = len(data)

    status, headers, body = get(base + "usr.img")
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")

    status, headers, body = get(base + "usr.img", {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{size}")

    status, headers, body = get(base + "usr.img", {"Range": "bytes=1000-"})
    assert (status, body, headers["Content-Range"]) == (206, data[1000:], f"bytes 1000-{size - 1}/{size}")

    status, headers, body = get(base + "usr.img", {"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])

    status, headers, body = get(base + "usr.img", {"Range": f"bytes={size - 2}-{size + 100}"})
    assert (status, body) == (206, data[-2:])

    status, headers, _ = get(base + "usr.img", {"Range": f"bytes={size}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")

    status, _, body = get(base + "usr.img", {"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, data)

    status, headers, body = get(base + "usr.img", method="HEAD")
    assert (status, int(headers["Content-Length"]), body) == (200, size, b"")

    assert get(base + "usr.img.sig")[::2] == (200, b"SIG\n")
    assert get(base + "other")[0] == 404
    assert get(f"http://127.0.0.1:{server.port}/payloads/nope/usr.img")[0] == 404
    ranges = [(d.range_header, d.status) for d in server.downloads if d.path.endswith("usr.img")]
    assert (f"bytes={size}-", 416) in ranges
    assert ("bytes=10-19", 206) in ranges


def test_interrupted_download_can_resume(server, payload):
    published = server.publish(RAILYARD_APP_ID, "stable", "2.0.0", payload, interrupt_at=5000)
    url = f"http://127.0.0.1:{server.port}/payloads/{published.payload_id}/{payload.name}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        with pytest.raises(Exception, match=r"IncompleteRead|incomplete"):
            answer.read()
    status, _, rest = get(url, {"Range": "bytes=5000-"})
    assert status == 206
    assert rest == payload.read_bytes()[5000:]


def test_wrong_metadata_can_be_published(server, payload):
    server.publish(RAILYARD_APP_ID, "stable", "2.0.0", payload, override_sha256="AAAA", override_size=7)
    root = post(server.url, update_engine_request(app_id=RAILYARD_APP_ID, version="1.0.0"))
    package = root.find("app/updatecheck/manifest/packages/package")
    assert (package.get("hash_sha256"), package.get("size")) == ("AAAA", "7")
    assert root.find("app/updatecheck/manifest/actions/action").get("sha256") == "AAAA"


def test_publish_rejects_bad_input(server, tmp_path, payload):
    with pytest.raises(ConfigError, match="no such file"):
        server.publish(RAILYARD_APP_ID, "stable", "2.0.0", tmp_path / "missing")
    with pytest.raises(ConfigError, match="plain file name"):
        server.publish(RAILYARD_APP_ID, "stable", "2.0.0", payload, name="a/b")
    with pytest.raises(ConfigError, match="empty track"):
        server.publish(RAILYARD_APP_ID, "", "2.0.0", payload)


def test_publishing_another_app_id_makes_it_known(payload):
    with OmahaServer() as omaha:
        omaha.publish(FLATCAR_APP_ID, "stable", "9999.0.0", payload)
        assert post(omaha.url, update_engine_request()).find("app/updatecheck").get("status") == "ok"


def test_server_needs_starting():
    omaha = OmahaServer()
    with pytest.raises(UpdateError, match="not running"):
        _ = omaha.url
    omaha.start()
    try:
        assert omaha.port > 0
    finally:
        omaha.stop()
    omaha.stop()


def test_malformed_post_gets_400(server):
    request = urllib.request.Request(server.url, data=b"<nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
