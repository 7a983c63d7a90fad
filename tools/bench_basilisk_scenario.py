"""A Basilisk (AVS Lab, PyPI ``bsk``) day equivalent to a Sunlit scenario, for ``sunlit bench``.

Runs in whatever interpreter has Basilisk installed, so it imports nothing from Sunlit: the
parameters come as one JSON argument (see ``tools.bench_basilisk.basilisk_params``) and the
result is one JSON line on stdout.

The plant: a rigid spacecraft (RK4, point-mass Earth plus J2) from the scenario's orbital
elements, Earth's conical shadow, a sun-pointing array, an ideal battery, a constant bus load,
the GPU as a constant load at its cap (always on: one ExecuteSimulation call, no Python in the
loop) and a one-node radiator heated by the GPU, all in one task at the scenario's step. Only
ExecuteSimulation is timed; imports and set-up are reported apart.

Offline by construction: Basilisk's support data (SPICE kernels, gravity files) is downloaded
at run time, and its gravity-body factory probes the network on import. So the sun is a fixed
inertial position from a low-precision almanac formula at the epoch (it moves ~1 degree a day),
Earth is a stand-alone message at the origin, and the gravity body is built by hand.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime

AU_M = 149_597_870_700.0
EARTH_MU_M3_S2 = 3.986004415e14
EARTH_RADIUS_M = 6_378_136.6
EARTH_J2 = 1.0826267e-3
UNIX_EPOCH_JD = 2_440_587.5
J2000_JD = 2_451_545.0


def julian_date(iso_utc: str) -> float:
    t = datetime.fromisoformat(iso_utc.replace("Z", "+00:00"))
    return UNIX_EPOCH_JD + t.timestamp() / 86_400.0


def sun_position_m(jd: float) -> list[float]:
    """Sun in the mean equatorial frame, metres (Astronomical Almanac low-precision series)."""
    days = jd - J2000_JD
    mean_longitude = math.radians((280.460 + 0.9856474 * days) % 360.0)
    mean_anomaly = math.radians((357.528 + 0.9856003 * days) % 360.0)
    ecliptic_longitude = (mean_longitude + math.radians(1.915) * math.sin(mean_anomaly)
                          + math.radians(0.020) * math.sin(2.0 * mean_anomaly))
    obliquity = math.radians(23.439 - 4.0e-7 * days)
    distance_m = AU_M * (1.00014 - 0.01671 * math.cos(mean_anomaly)
                         - 0.00014 * math.cos(2.0 * mean_anomaly))
    return [distance_m * math.cos(ecliptic_longitude),
            distance_m * math.cos(obliquity) * math.sin(ecliptic_longitude),
            distance_m * math.sin(obliquity) * math.sin(ecliptic_longitude)]


def state_from_elements(a_m: float, e: float, i_rad: float, raan_rad: float, argp_rad: float,
                        mean_anomaly_rad: float) -> tuple[list[float], list[float]]:
    """Two-body position (m) and velocity (m/s) from classical elements."""
    ecc_anomaly = mean_anomaly_rad
    for _ in range(50):  # Newton on Kepler's equation
        delta = (ecc_anomaly - e * math.sin(ecc_anomaly) - mean_anomaly_rad) / (1.0 - e * math.cos(ecc_anomaly))
        ecc_anomaly -= delta
        if abs(delta) < 1e-14:
            break
    cos_e, sin_e = math.cos(ecc_anomaly), math.sin(ecc_anomaly)
    root = math.sqrt(1.0 - e * e)
    # Perifocal frame, then rotate by argp, i, raan.
    x_p, y_p = a_m * (cos_e - e), a_m * root * sin_e
    r_m = a_m * (1.0 - e * cos_e)
    speed = math.sqrt(EARTH_MU_M3_S2 * a_m) / r_m
    vx_p, vy_p = -speed * sin_e, speed * root * cos_e
    co, so = math.cos(raan_rad), math.sin(raan_rad)
    cw, sw = math.cos(argp_rad), math.sin(argp_rad)
    ci, si = math.cos(i_rad), math.sin(i_rad)
    p_hat = [co * cw - so * sw * ci, so * cw + co * sw * ci, sw * si]
    q_hat = [-co * sw - so * cw * ci, -so * sw + co * cw * ci, cw * si]
    position = [x_p * p + y_p * q for p, q in zip(p_hat, q_hat)]
    velocity = [vx_p * p + vy_p * q for p, q in zip(p_hat, q_hat)]
    return position, velocity


def run(params: dict) -> dict:
    t_import0 = time.perf_counter()
    from Basilisk import __version__ as bsk_version
    from Basilisk.architecture import messaging
    from Basilisk.simulation import (eclipse, gravityEffector, sensorThermal, simpleBattery,
                                     simplePowerSink, simpleSolarPanel, spacecraft)
    from Basilisk.simulation.gravityEffector import SphericalHarmonicsGravityModel
    from Basilisk.utilities import SimulationBaseClass
    import_s = time.perf_counter() - t_import0

    t_setup0 = time.perf_counter()
    step_ns = int(params["step_s"]) * 1_000_000_000
    sim = SimulationBaseClass.SimBaseClass()
    process = sim.CreateNewProcess("plant")
    process.addTask(sim.CreateNewTask("step", step_ns))
    keep = []  # SWIG objects that must outlive set-up

    def planet(name: str, position_m: list[float]):
        payload = messaging.SpicePlanetStateMsgPayload()
        payload.PlanetName = name
        payload.PositionVector = position_m
        payload.VelocityVector = [0.0, 0.0, 0.0]
        payload.J20002Pfix = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        message = messaging.SpicePlanetStateMsg().write(payload)
        keep.append(message)
        return message

    sun_m = sun_position_m(julian_date(params["epoch_utc"]))
    sun_norm = math.sqrt(sum(c * c for c in sun_m))
    sun_hat = [c / sun_norm for c in sun_m]
    earth_msg = planet("earth", [0.0, 0.0, 0.0])
    sun_msg = planet("sun", sun_m)

    craft = spacecraft.Spacecraft()
    craft.ModelTag = "sat"
    craft.hub.mHub = float(params["mass_kg"])
    craft.hub.IHubPntBc_B = [[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 80.0]]
    gravity = SphericalHarmonicsGravityModel()
    gravity.muBody = EARTH_MU_M3_S2
    gravity.radEquator = EARTH_RADIUS_M
    gravity.maxDeg = 2
    gravity.cBar = [[1.0], [0.0, 0.0], [-EARTH_J2 / math.sqrt(5.0), 0.0, 0.0]]  # normalised C20
    gravity.sBar = [[0.0], [0.0, 0.0], [0.0, 0.0, 0.0]]
    earth = gravityEffector.GravBodyData()
    earth.planetName = "earth"
    earth.mu = EARTH_MU_M3_S2
    earth.radEquator = EARTH_RADIUS_M
    earth.isCentralBody = True
    earth.gravityModel = gravity
    earth.planetBodyInMsg.subscribeTo(earth_msg)
    craft.gravField.setGravBodies(gravityEffector.GravBodyVector([earth]))
    keep += [gravity, earth]
    position, velocity = state_from_elements(
        EARTH_RADIUS_M + 1e3 * params["altitude_km"], params["eccentricity"],
        math.radians(params["inclination_deg"]), math.radians(params["raan_deg"]),
        math.radians(params["arg_perigee_deg"]), math.radians(params["mean_anomaly_deg"]))
    craft.hub.r_CN_NInit = position
    craft.hub.v_CN_NInit = velocity
    # Body frame = inertial frame, held (no torques, no rate): the array normal, fixed in the
    # body, points at the (fixed) sun all day, as the scenario's sun-pointing array does.
    craft.hub.sigma_BNInit = [[0.0], [0.0], [0.0]]
    craft.hub.omega_BN_BInit = [[0.0], [0.0], [0.0]]
    sim.AddModelToTask("step", craft, 100)

    shadow = eclipse.Eclipse()
    shadow.ModelTag = "eclipse"
    shadow.addSpacecraftToModel(craft.scStateOutMsg)
    shadow.addPlanetToModel(earth_msg)
    shadow.sunInMsg.subscribeTo(sun_msg)
    sim.AddModelToTask("step", shadow, 90)

    array = simpleSolarPanel.SimpleSolarPanel()
    array.ModelTag = "array"
    array.stateInMsg.subscribeTo(craft.scStateOutMsg)
    array.sunInMsg.subscribeTo(sun_msg)
    array.sunEclipseInMsg.subscribeTo(shadow.eclipseOutMsgs[0])
    array.setPanelParameters(sun_hat, params["array_area_m2"], params["array_efficiency"])
    sim.AddModelToTask("step", array, 80)

    loads = []
    for tag, power_w in (("bus", params["bus_load_w"]), ("gpu", params["gpu_power_w"])):
        load = simplePowerSink.SimplePowerSink()
        load.ModelTag = tag
        load.nodePowerOut = -float(power_w)
        sim.AddModelToTask("step", load, 80)
        loads.append(load)

    battery = simpleBattery.SimpleBattery()
    battery.ModelTag = "battery"
    battery.storageCapacity = params["battery_capacity_wh"] * 3600.0  # W s
    battery.storedCharge_Init = params["initial_soc"] * battery.storageCapacity
    for node in (array, *loads):
        battery.addPowerNodeToModel(node.nodePowerOutMsg)
    sim.AddModelToTask("step", battery, 70)

    radiator = sensorThermal.SensorThermal()
    radiator.ModelTag = "radiator"
    radiator.nHat_B = [-c for c in sun_hat]
    radiator.sensorArea = params["radiator_area_m2"]
    radiator.sensorAbsorptivity = 0.2
    radiator.sensorEmissivity = 0.85
    radiator.sensorMass = 20.0
    radiator.sensorSpecificHeat = 900.0
    radiator.sensorPowerDraw = float(params["gpu_power_w"])
    radiator.T_0 = 20.0
    radiator.sunInMsg.subscribeTo(sun_msg)
    radiator.stateInMsg.subscribeTo(craft.scStateOutMsg)
    radiator.sunEclipseInMsg.subscribeTo(shadow.eclipseOutMsgs[0])
    sim.AddModelToTask("step", radiator, 60)

    # Two thin recorders (one sample a minute) for the sanity figures below.
    minute_ns = 60 * 1_000_000_000
    soc_log = battery.batPowerOutMsg.recorder(minute_ns)
    shadow_log = shadow.eclipseOutMsgs[0].recorder(minute_ns)
    for recorder in (soc_log, shadow_log):
        sim.AddModelToTask("step", recorder, 0)

    sim.InitializeSimulation()
    sim.ConfigureStopTime(int(params["duration_s"]) * 1_000_000_000)
    setup_s = time.perf_counter() - t_setup0

    t0 = time.perf_counter()
    sim.ExecuteSimulation()
    exec_s = time.perf_counter() - t0

    soc = [level / capacity for level, capacity in zip(soc_log.storageLevel, soc_log.storageCapacity)]
    shadow_factor = list(shadow_log.shadowFactor)
    return {
        "bsk_version": bsk_version,
        "exec_s": exec_s,
        "setup_s": setup_s,
        "import_s": import_s,
        "steps": int(params["duration_s"]) // int(params["step_s"]),
        "eclipse_fraction": sum(1 for f in shadow_factor if f < 0.5) / max(1, len(shadow_factor)),
        "soc_min": min(soc),
        "soc_end": soc[-1],
        # True would mean Basilisk's support-data fetcher (which probes GitHub) got imported.
        "support_data_fetcher_loaded": "Basilisk.utilities.supportDataTools.dataFetcher" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
