"""HAL bus services: telemetry out, commands in, exactly one terminal response per command."""

import msgpack
import pytest
import zmq

from flight.bus import Bus
from hal.service import DeviceService
from hal.sim_backends import SimAccelerator, SimEps, SimGpu, SimNav, SimThermal
from sim.scenario import load_scenario
from sim.world import World


@pytest.fixture
def rig():
    world = World(load_scenario("starcloud1"))
    bus = Bus(lambda: world.t_s * 1_000_000_000, name="hal-test")
    gpu = DeviceService(SimGpu(world, seed=1), bus)
    eps = DeviceService(SimEps(world, seed=1), bus)
    ground = bus.publisher("ground")
    responses = bus.subscribe(["rsp."], name="responses")
    telemetry = bus.subscribe(["tlm."], name="telemetry")
    bus.settle()
    yield world, bus, gpu, eps, ground, responses, telemetry
    bus.close()


def send(ground, service, opcode, args=None, command_id=1, raw_body=None):
    body = raw_body if raw_body is not None else {"id": command_id, "opcode": opcode, "args": args or {}}
    ground.publish(f"cmd.{service.name}", body)
    service.execute_commands()


def test_switch_and_cap_commands_actuate_the_plant(rig):
    world, bus, gpu, eps, ground, responses, _ = rig
    send(ground, eps, "SET_SWITCH", {"switch": "gpu", "on": True})
    send(ground, gpu, "SET_POWER_CAP", {"cap_w": 350}, command_id=2)
    assert world.switches["gpu"] is True
    assert world.gpu.state == "booting"
    assert world.gpu.power_cap_w == 350
    statuses = [(m.topic, m.body["id"], m.body["status"]) for m in responses.drain()]
    assert statuses == [("rsp.eps", 1, "OK"), ("rsp.gpu", 2, "OK")]


@pytest.mark.parametrize("opcode, args, status, fragment", [
    ("SET_POWER_CAP", {"cap_w": 900}, "VALIDATION_ERROR", "'cap_w'=900 out of range: float in [200, 700] W"),
    ("SET_POWER_CAP", {"cap_w": 100}, "VALIDATION_ERROR", "[200, 700]"),
    ("SET_POWER_CAP", {"cap_w": "max"}, "FORMAT_ERROR", "'cap_w' must be a number"),
    ("SET_POWER_CAP", {}, "FORMAT_ERROR", "missing argument 'cap_w'"),
    ("SET_POWER_CAP", {"cap_w": True}, "FORMAT_ERROR", "must be a number"),
    ("FLY_TO_MOON", {}, "INVALID_OPCODE", "no opcode 'FLY_TO_MOON'"),
])
def test_gpu_rejections_name_the_argument_and_range(rig, opcode, args, status, fragment):
    world, bus, gpu, eps, ground, responses, _ = rig
    cap_before = world.gpu.power_cap_w
    send(ground, gpu, opcode, args)
    (response,) = responses.drain()
    assert response.body["status"] == status
    assert fragment in response.body["reason"]
    assert world.gpu.power_cap_w == cap_before
    assert gpu.commands_rejected == 1 and gpu.commands_accepted == 0


@pytest.mark.parametrize("args, status", [
    ({"switch": "heater", "on": True}, "VALIDATION_ERROR"),
    ({"switch": "gpu", "on": 1}, "FORMAT_ERROR"),
    ({"switch": 3, "on": True}, "FORMAT_ERROR"),
])
def test_eps_switch_rejections(rig, args, status):
    world, bus, gpu, eps, ground, responses, _ = rig
    send(ground, eps, "SET_SWITCH", args)
    (response,) = responses.drain()
    assert response.body["status"] == status
    assert world.switches["gpu"] is False


@pytest.mark.parametrize("raw_body", [{"opcode": 5}, {"id": 3, "opcode": "NOOP", "args": [1, 2]}, {}])
def test_malformed_commands_get_format_error_and_service_keeps_running(rig, raw_body):
    world, bus, gpu, eps, ground, responses, _ = rig
    send(ground, gpu, None, raw_body=raw_body)
    send(ground, gpu, "NOOP", command_id=9)
    bodies = [m.body for m in responses.drain()]
    assert bodies[0]["status"] == "FORMAT_ERROR"
    assert bodies[1] == {"id": 9, "opcode": "NOOP", "status": "OK", "reason": "", "to": "ground"}


def test_undecodable_frame_is_counted_not_raised(rig):
    world, bus, gpu, eps, ground, responses, _ = rig
    raw = bus.context.socket(zmq.PUB)
    # Inject through a second PUB bound in-process that the command subscription also listens to.
    endpoint = "inproc://hal-test-raw"
    raw.bind(endpoint)
    gpu.commands.subscription.connect(endpoint)
    for _ in range(50):
        raw.send(b"cmd.gpu\x00" + b"\xc1not msgpack")
        if gpu.commands.subscription.poll(10):
            break
    gpu.execute_commands()
    assert gpu.commands.subscription.malformed >= 1
    send(ground, gpu, "NOOP", command_id=4)
    assert [m.body["status"] for m in responses.drain()] == ["OK"]
    raw.close(linger=0)


def test_noop_and_reset_counters(rig):
    world, bus, gpu, eps, ground, responses, telemetry = rig
    send(ground, gpu, "NOOP")
    send(ground, gpu, "SET_POWER_CAP", {"cap_w": 5})
    gpu.publish_telemetry()
    body = [m for m in telemetry.drain() if m.topic == "tlm.gpu"][-1].body
    assert (body["cmd_accepted"], body["cmd_rejected"]) == (1, 1)
    send(ground, gpu, "RESET_COUNTERS")
    assert (gpu.commands_accepted, gpu.commands_rejected) == (1, 0)  # the reset itself counts


def test_telemetry_reads_the_plant(rig):
    world, bus, gpu, eps, ground, responses, telemetry = rig
    nav = DeviceService(SimNav(world), bus)
    thermal = DeviceService(SimThermal(world, seed=1, noise=False), bus)
    for _ in range(30):
        world.step()
    for service in (eps, gpu, nav, thermal):
        service.publish_telemetry()
    latest = {m.topic: m.body for m in telemetry.drain()}
    assert set(latest) == {"tlm.eps", "tlm.gpu", "tlm.nav", "tlm.thermal"}
    assert latest["tlm.eps"]["battery_soc"] == pytest.approx(world.battery.soc, abs=0.005)
    assert latest["tlm.eps"]["battery_capacity_wh"] == world.battery.capacity_wh
    assert latest["tlm.thermal"]["radiator_temp_c"] == world.thermal.radiator_temp_c
    track, i = world.sample
    assert latest["tlm.nav"]["lat_deg"] == track.lat_deg[i]
    assert latest["tlm.gpu"]["state"] == "off" and latest["tlm.gpu"]["temp_c"] is None
    start_in = latest["tlm.nav"]["umbra_start_in_s"]
    assert start_in is not None and 0 <= start_in < 6000


def test_sensor_noise_is_the_generators_single_draws_in_order_across_blocks():
    import numpy as np

    from hal.sim_backends import NOISE_BLOCK

    world = World(load_scenario("starcloud1"))
    thermal = SimThermal(world, seed=7)
    reference = np.random.default_rng([7, 3])  # SimThermal is device 3
    n_reads = NOISE_BLOCK // 3 + 5  # three draws a read: crosses a block boundary
    for _ in range(n_reads):
        body = thermal.read()
        expected = [float(value + 0.1 * reference.standard_normal())
                    for value in (world.thermal.die_temp_c, world.thermal.plate_temp_c, world.thermal.radiator_temp_c)]
        assert [body["gpu_die_temp_c"], body["cold_plate_temp_c"], body["radiator_temp_c"]] == expected


def test_accelerator_reports_work_only_when_booted_and_busy():
    world = World(load_scenario("starcloud1"))
    accel = SimAccelerator(world)
    world.set_switch("gpu", True)
    accel.set_busy(True)
    assert not accel.ready()
    boot_s = int(world.gpu.params.boot_time_s)
    for _ in range(boot_s):
        world.step()
    assert accel.ready()
    assert accel.take_work_ref_s() == pytest.approx(0.0)
    accel.set_busy(True)
    for _ in range(10):
        world.step()
    # At the default cap (700 W = TDP) one second of busy time is one reference second.
    assert accel.take_work_ref_s() == pytest.approx(10.0, rel=1e-6)


# --- the SAA forecast -------------------------------------------------------------------------

def brute_force_saa(track, i):
    """(start, end) of the SAA pass in progress at sample i or the next one, scanning every sample.

    The box is written out here from the source (domain facts: lat -50..0, lon -90..+40), not
    taken from the code under test. Returns sample times; None if no pass starts in the track.
    """
    inside = [(-50.0 <= la <= 0.0) and (-90.0 <= lo <= 40.0)
              for la, lo in zip(track.lat_deg[i:].tolist(), track.lon_deg[i:].tolist())]
    if True not in inside:
        return None
    first = inside.index(True)
    last = inside.index(False, first) if False in inside[first:] else len(inside)
    return float(track.t_s[i + first]), float(track.t_s[i + last - 1])


def test_saa_forecast_matches_a_brute_force_scan_of_the_track():
    world = World(load_scenario("starcloud1"))
    nav = SimNav(world)
    checked = inside_seen = 0
    for _ in range(2 * 5466):  # two orbits: several SAA passes at 45 deg inclination
        world.step()
        if world.t_s % 37:  # every 37th second is plenty, and hits both sides of each boundary
            continue
        body = nav.read()
        track, i = world.sample
        now = float(track.t_s[i])
        expected = brute_force_saa(track, i)
        assert body["in_saa"] == ((-50 <= body["lat_deg"] <= 0) and (-90 <= body["lon_deg"] <= 40))
        if expected is None:
            assert body["saa_start_in_s"] is None
            continue
        first_s, last_s = expected
        checked += 1
        if body["in_saa"]:
            inside_seen += 1
            assert first_s == now and body["saa_start_in_s"] == 0.0
        else:
            # The boundary is interpolated between the last sample outside and the first inside.
            assert first_s - world.step_s < now + body["saa_start_in_s"] <= first_s
        # The exit lies between the last sample inside and the next one.
        assert last_s <= now + body["saa_end_in_s"] < last_s + world.step_s
    assert checked > 200 and inside_seen > 20
    assert world.orbit.windows_computed <= 3  # passes come from each track window, not from per-tick scans


def test_saa_box_edges_and_the_date_line():
    from sim.track_buffer import SAA_LAT_DEG, SAA_LON_DEG, in_saa, saa_margin_deg

    assert (SAA_LAT_DEG, SAA_LON_DEG) == ((-50.0, 0.0), (-90.0, 40.0))
    assert in_saa(-50.0, -90.0) and in_saa(0.0, 40.0) and in_saa(-25.0, -25.0)
    assert not in_saa(0.01, 0.0) and not in_saa(-30.0, 40.01) and not in_saa(-50.01, 0.0)
    # 10 deg from the nearest edge (latitude 0) at the centre of the box; negative outside.
    assert saa_margin_deg(-10.0, -25.0) == 10.0
    # Across the +-180 deg seam the margin stays negative, so no pass is invented there.
    assert saa_margin_deg(-20.0, 179.9) < 0 and saa_margin_deg(-20.0, -179.9) < 0


def test_nav_telemetry_is_declared_in_the_dictionary():
    from flight.dictionary import default_dictionary

    world = World(load_scenario("starcloud1"))
    channels = default_dictionary().channels
    for key in SimNav(world).read():
        assert f"nav.{key}" in channels, key


def test_ephemeris_track_is_the_rounded_strided_track_across_window_refreshes():
    import numpy as np

    from hal.sim_ephemeris import SimEphemeris

    world = World(load_scenario("starcloud1"))
    ephemeris = SimEphemeris(world)
    windows = world.orbit.windows_computed
    checked = 0
    for step in range(4 * 3600 + 1):  # past a refresh of the world's 6 h track window (3 h look-ahead)
        if step % 600 == 0 or world.orbit.windows_computed != windows:
            windows = world.orbit.windows_computed
            body = ephemeris.read()
            i = world.orbit.index(world.t_s)
            end = i + ephemeris.horizon_s // world.step_s + 1
            stride = ephemeris.track_step_s // world.step_s
            assert body["track_lat_deg"] == np.round(world.orbit.track.lat_deg[i:end:stride], 3).tolist()
            assert body["track_lon_deg"] == np.round(world.orbit.track.lon_deg[i:end:stride], 3).tolist()
            checked += 1
        world.step()
    assert world.orbit.windows_computed >= 2 and checked > 20
