"""Physical constants shared by the world models (SI-derived units named in each constant)."""

from __future__ import annotations

# Earth (WGS84 shape; the EGM/WGS84 gravitational parameter). SGP4 itself uses WGS72 internally.
MU_EARTH_KM3_S2 = 398600.4418
R_EARTH_EQUATORIAL_KM = 6378.137
WGS84_FLATTENING = 1.0 / 298.257223563
WGS84_ECCENTRICITY_SQ = WGS84_FLATTENING * (2.0 - WGS84_FLATTENING)
R_EARTH_POLAR_KM = R_EARTH_EQUATORIAL_KM * (1.0 - WGS84_FLATTENING)
J2 = 1.08262668e-3

# Sun.
R_SUN_KM = 695700.0  # IAU 2015 nominal solar radius
AU_KM = 149597870.7
SOLAR_CONSTANT_W_M2 = 1361.0  # total solar irradiance at 1 AU

# Earth's radiation environment, orbit-averaged global means.
EARTH_IR_W_M2 = 237.0
EARTH_ALBEDO = 0.30

STEFAN_BOLTZMANN_W_M2_K4 = 5.670374419e-8

SECONDS_PER_DAY = 86400.0
