"""Build the onboard region map, flight/assistant/data/regions.npz, from Natural Earth.

The assistant answers "Where are you?" from this file alone: no network, no geodata library at
run time. This builder runs on the ground, once, and its output is committed.

Source (public domain): Natural Earth 1:110m admin-0 countries, as shipped inside the geopandas
0.14.4 wheel (geopandas/datasets/naturalearth_lowres/naturalearth_lowres.{shp,dbf}; fields name,
iso_a3, continent). Fetch the wheel with the ordinary pip client, then build:

    pip download geopandas==0.14.4 --no-deps -d /tmp/gpd
    python -m tools.build_regions --wheel /tmp/gpd/geopandas-0.14.4-py3-none-any.whl

The shapefile is read by the small reader below (the .shp polygon and .dbf formats are simple), so
the builder needs only numpy (and matplotlib for --preview), both Sunlit dependencies. The SHA-256
of the .shp and .dbf members is pinned: another input is refused, naming the member. (The wheel's
own SHA-256, 3bb6473c..., is recorded in the output but not enforced: the members are what count.)

Reproducible: same inputs -> byte-identical output. The raster depends only on the pinned inputs and
the tables below; the .npz is written as np.savez_compressed writes it (a zip of .npy members,
deflated) but with a fixed member order and fixed zip timestamps, which np.savez_compressed does not
offer (it stamps the wall clock).

Grid. 0.25 deg cells (1440 x 720, one uint8 each: 1 MB in memory, ~16 kB compressed); a cell
takes the region at its centre. Why 0.25 deg: the 1:110m source is generalised to ~10-30 km at the
coast, so finer cells add size, not truth; a 28 km cell is ~4 s of ground track at 7.2 km/s, far
inside the assistant's +-1 min (~430 km of track) tolerance. Rows run south to north from -90,
columns west to east from -180.

Land -> a region from the country (the tables MIDDLE_EAST, CENTRAL_AMERICA, CARIBBEAN, OCEANIA,
CONTINENT_REGION; per-ring and per-point splits in _ring_region and land_regions):
- Middle East (kind "region"): Saudi Arabia, United Arab Emirates, Qatar, Kuwait, Oman, Yemen,
  Iraq, Iran, Syria, Jordan, Israel, Palestine, Lebanon, Cyprus, N. Cyprus; Turkey east of the
  straits (Anatolia); Egypt's Sinai (east of the Suez canal). Bahrain is too small for 1:110m.
  Transcontinental countries are split at the continental boundary, so the map says what ground
  is below: mainland Egypt is Africa (the satellite over the Nile is "above Africa"), East Thrace
  is Europe, Cyprus (Asian by geography, listed in the common Middle East definitions) is Middle East.
- Europe / Asia: Russia (Europe in Natural Earth) is split on the Urals (URALS_LON_BY_LAT, about
  59-60 E, 66 E in the polar Urals); Novaya Zemlya goes with Europe, Chukotka west of 180 with Asia.
  The Caucasus states and Kazakhstan stay Asia, as Natural Earth has them.
- Australia (kind "continent") is the Australian mainland country with Tasmania; Oceania is the
  rest of the Pacific islands: New Zealand, Papua New Guinea, Fiji, Solomon Is., Vanuatu, New
  Caledonia, Indonesian New Guinea (Indonesia east of 130.5 E) and Hawaii.
- Central America (Guatemala to Panama) and the Caribbean (the Antilles, the Bahamas, Trinidad and
  Tobago) are named regions; Mexico, the USA and Canada are North America; Greenland is named.
- French Guiana (a part of France in Natural Earth) is South America; the French Southern and
  Antarctic Lands ("Seven seas") are treated as sea: one says "over the Indian Ocean" there.

Water -> the first rule that holds (all points (lat, lon) in degrees; the IHO S-23 limits are
approximated by straight lines between the named points, and every other vertex lies on land, so
that only its water side matters):
1. Named seas (SEAS, in order): Caspian, Black (with Azov), Mediterranean, Red (with the Gulfs of
   Suez and Aqaba),
   Persian Gulf, Gulf of Aden, Arabian (with the Gulf of Oman), Bay of Bengal, South China (with the
   Gulfs of Thailand and Tonkin), Gulf of Mexico, Caribbean, Hudson Bay, Baltic (with Kattegat),
   North (with Skagerrak). Each polygon's gates across open water are the IHO limits, named below.
   There is no lake rule: the 1:110m country polygons cover the lakes (the Great Lakes, Victoria
   and Baikal are land here, so "above North America" over Lake Superior); the Caspian is the one
   inland water body. Inlets cut off from the open sea at this resolution (fjords, Chesapeake Bay,
   Lake Maracaibo, the Strait of Magellan) keep the rules that their position gives them.
2. Southern Ocean: south of 60 S (IHO 2000 draft).
3. Arctic Ocean: north of ARCTIC_SOUTH_LIMIT: the Arctic Circle across the Bering Strait (IHO Bering
   Sea limit), the Hudson Strait mouth (Cape Chidley - Resolution Island), 70 N across Baffin Bay,
   Greenland - Iceland (Cape Nansen - Straumnes), Iceland - Jan Mayen - Spitsbergen - Bear Island -
   North Cape (IHO Greenland and Norwegian Sea limits), so the Greenland, Barents, White and Kara Seas,
   Baffin Bay and Hudson Strait are Arctic and the Norwegian Sea is Atlantic.
4. Indian Ocean: inside INDIAN_SECTOR. West edge: 20 E from 60 S to Cape Agulhas (IHO), then over
   Africa to Suez; north edge over Asia; east edge the IHO line Singapore Strait - Sumatra - Sunda
   Strait - south of Java and the Lesser Sundas - Timor - Cape Don (Timor Sea Indian, Arafura Sea
   Pacific) - through Australia - Cape Otway - King Island - Tasmania - 146 deg 55' E to 60 S. The
   Andaman Sea and the Malacca Strait are Indian.
5. Pacific Ocean: inside PACIFIC_SECTOR: east of that line (and of 100 E over Asia), west of the
   Americas (over the Panama isthmus) and of the meridian of Cape Horn (67 deg 16' W) to 60 S.
6. Atlantic Ocean: all other water.

Output arrays (np.load(path, allow_pickle=False)): raster (uint8, [row, col]), names, kinds
("continent" | "region" | "ocean" | "sea"), articles ("the" or ""), lat0_deg, lon0_deg, cell_deg,
format_version, source (text), build (JSON text: parameters and input hashes).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
CELL_DEG = 0.25
LAT0_DEG = -90.0
LON0_DEG = -180.0
N_ROWS = round(180 / CELL_DEG)
N_COLS = round(360 / CELL_DEG)

MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
# The inputs this map was built and checked from; another version would need its boundaries re-checked.
PINNED_SHA256 = {
    ".shp": "1f689e60b357e1e98702d5d9f774e95e77fc6b324487cadf57eb9317d533ce12",
    ".dbf": "5cfbcaa21ce5fad798abf2ec65ab0db59538f9bb8a37273ef62b6aa8121487fd",
}
SOURCE_TEXT = ("Natural Earth 1:110m admin-0 countries (public domain, naturalearthdata.com), "
               "from the geopandas 0.14.4 wheel (naturalearth_lowres); sea and ocean limits "
               "approximated from IHO S-23 by tools/build_regions.py")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "flight" / "assistant" / "data" / "regions.npz"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class RegionDef:
    name: str
    kind: str      # "continent" | "region" | "ocean" | "sea"
    article: str   # "the" or "": "over the Pacific Ocean", "above Africa"


# Region ids are positions in this table: the raster stores them.
REGIONS: tuple[RegionDef, ...] = (
    RegionDef("Africa", "continent", ""),
    RegionDef("Antarctica", "continent", ""),
    RegionDef("Asia", "continent", ""),
    RegionDef("Australia", "continent", ""),
    RegionDef("Europe", "continent", ""),
    RegionDef("North America", "continent", ""),
    RegionDef("Oceania", "continent", ""),
    RegionDef("South America", "continent", ""),
    RegionDef("Middle East", "region", "the"),
    RegionDef("Central America", "region", ""),
    RegionDef("Caribbean", "region", "the"),
    RegionDef("Greenland", "region", ""),
    RegionDef("Atlantic Ocean", "ocean", "the"),
    RegionDef("Pacific Ocean", "ocean", "the"),
    RegionDef("Indian Ocean", "ocean", "the"),
    RegionDef("Arctic Ocean", "ocean", "the"),
    RegionDef("Southern Ocean", "ocean", "the"),
    RegionDef("Caspian Sea", "sea", "the"),
    RegionDef("Black Sea", "sea", "the"),
    RegionDef("Mediterranean Sea", "sea", "the"),
    RegionDef("Red Sea", "sea", "the"),
    RegionDef("Persian Gulf", "sea", "the"),
    RegionDef("Gulf of Aden", "sea", "the"),
    RegionDef("Arabian Sea", "sea", "the"),
    RegionDef("Bay of Bengal", "sea", "the"),
    RegionDef("South China Sea", "sea", "the"),
    RegionDef("Gulf of Mexico", "sea", "the"),
    RegionDef("Caribbean Sea", "sea", "the"),
    RegionDef("Hudson Bay", "sea", ""),
    RegionDef("Baltic Sea", "sea", "the"),
    RegionDef("North Sea", "sea", "the"),
)
REGION_ID = {r.name: i for i, r in enumerate(REGIONS)}

# ---- land -------------------------------------------------------------------------------------

MIDDLE_EAST = frozenset({
    "Saudi Arabia", "United Arab Emirates", "Qatar", "Kuwait", "Oman", "Yemen", "Iraq", "Iran",
    "Syria", "Jordan", "Israel", "Palestine", "Lebanon", "Cyprus", "N. Cyprus", "Bahrain",
})
CENTRAL_AMERICA = frozenset({"Guatemala", "Belize", "Honduras", "El Salvador", "Nicaragua",
                             "Costa Rica", "Panama"})
CARIBBEAN = frozenset({"Cuba", "Haiti", "Dominican Rep.", "Jamaica", "Puerto Rico", "Bahamas",
                       "Trinidad and Tobago"})
OCEANIA = frozenset({"New Zealand", "Papua New Guinea", "Fiji", "Solomon Is.", "Vanuatu",
                     "New Caledonia"})
# Natural Earth continent -> region, for countries no rule above names.
CONTINENT_REGION = {
    "Africa": "Africa", "Antarctica": "Antarctica", "Asia": "Asia", "Europe": "Europe",
    "North America": "North America", "South America": "South America", "Oceania": "Oceania",
}
SEA_COUNTRY_CONTINENT = "Seven seas (open ocean)"   # treated as water

# The Urals as Europe's eastern edge in Russia: (lat, lon east of which is Asia). South of 55 N the
# line stays on 59 E (the Ural river runs in Kazakhstan); north of 70 N it swings east of
# Vaygach and Novaya Zemlya, which are European, while Yamal (66-73.5 N, 66-72 E) stays Asian.
URALS_LON_BY_LAT = ((55.0, 59.0), (60.0, 59.5), (65.0, 60.0), (68.5, 66.0), (69.9, 66.0),
                    (70.0, 62.0), (73.6, 62.0), (73.7, 70.0))

# Sinai: Egyptian land east of the Suez canal and the Gulf of Suez axis is Middle East (land only).
SINAI = ((31.6, 32.3), (29.95, 32.55), (29.0, 32.8), (28.3, 33.3), (27.6, 34.0), (27.6, 35.5),
         (31.6, 35.5))

# ---- water ------------------------------------------------------------------------------------
# Polygons are lists of (lat, lon) in degrees; lon may run past 180 to stay continuous.

SEAS: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = (
    # Closed basin: the whole box is the lake; no other sea reaches it.
    ("Caspian Sea", ((36.0, 46.0), (47.5, 46.0), (47.5, 55.5), (36.0, 55.5))),
    # Gate: the Bosporus (41.15 N 29.1 E); the Sea of Azov is included.
    ("Black Sea", ((42.0, 27.0), (41.1, 28.5), (41.15, 29.1), (40.9, 30.5), (40.5, 35.0),
                   (40.5, 40.0), (41.8, 42.5), (43.5, 41.5), (45.0, 39.5), (47.5, 39.5),
                   (47.3, 35.0), (47.0, 31.5), (46.8, 30.2), (45.5, 28.5), (43.5, 27.5))),
    # Gates: Gibraltar on 5 deg 36' W; Suez (land at 1:110m). Overlaps the Black Sea, which is first.
    ("Mediterranean Sea", ((37.5, -5.6), (35.0, -5.6), (34.0, 0.0), (35.5, 9.0), (33.5, 9.5),
                           (32.0, 11.5), (29.5, 18.0), (30.5, 25.0), (30.7, 32.0), (31.0, 34.8), (33.0, 35.6),
                           (35.0, 36.5), (36.8, 36.8), (37.5, 35.0), (37.5, 30.0), (39.5, 29.5),
                           (40.5, 31.0), (42.5, 29.0), (42.5, 26.0), (41.5, 23.0), (42.0, 20.0),
                           (45.0, 15.5), (46.3, 13.0), (45.5, 7.0), (44.0, 3.0), (42.5, 1.0),
                           (41.0, -1.0), (38.5, -2.0))),
    # Gate: Bab-el-Mandeb, Husn Murad (12.67 N 43.5 E) - Ras Siyan (12.48 N 43.33 E). Gulfs of Suez
    # and Aqaba included.
    ("Red Sea", ((30.5, 32.0), (30.0, 35.3), (27.0, 37.5), (21.0, 40.5), (16.5, 43.5),
                 (12.67, 43.5), (12.48, 43.33), (13.0, 42.0), (15.0, 39.0), (18.0, 37.5),
                 (22.0, 35.5), (27.5, 33.0), (29.0, 32.3))),
    # Gate: Strait of Hormuz, Ras Limah (25.95 N 56.42 E) - Ras al Kuh (25.8 N 57.3 E).
    ("Persian Gulf", ((31.0, 47.0), (31.0, 50.0), (28.5, 52.0), (27.0, 55.0), (27.3, 56.5),
                      (27.0, 57.5), (25.8, 57.3), (25.95, 56.42), (25.0, 56.0), (23.5, 54.0),
                      (24.0, 51.5), (25.0, 49.5), (27.0, 48.8), (29.0, 47.0))),
    # Gates: Bab-el-Mandeb; Cape Guardafui (11.83 N 51.28 E) - Ras Fartak (15.63 N 52.23 E).
    ("Gulf of Aden", ((12.67, 43.5), (13.5, 44.5), (14.5, 48.0), (15.63, 52.23), (11.83, 51.28),
                      (10.5, 49.0), (9.8, 44.5), (11.0, 42.5), (12.48, 43.33))),
    # Gates: Hormuz; Guardafui - Ras Fartak; Ras Hafun (10.43 N 51.4 E) - Addu Atoll (0.7 S 73.15 E);
    # west of the Maldives and Laccadives to Corah Divh (13.7 N 72.2 E) - Sadashivgad (14.8 N 74.1 E).
    # The Gulf of Oman is included; the Laccadive Sea is not (it is Indian Ocean here).
    ("Arabian Sea", ((25.8, 57.3), (25.95, 56.42), (25.0, 56.0), (23.0, 57.5), (20.5, 56.5),
                     (18.0, 54.0), (17.0, 52.3), (15.63, 52.23), (11.83, 51.28), (10.43, 51.4),
                     (-0.7, 73.15), (4.0, 72.6), (8.0, 72.5), (13.7, 72.2), (14.8, 74.1), (16.0, 75.0), (21.0, 74.0),
                     (22.8, 73.0), (24.0, 72.0), (26.0, 66.5), (26.0, 61.7), (26.5, 58.0))),
    # Gates: Dondra Head (5.92 N 80.59 E) - Pulau Rondo (5.97 N 95.1 E); Cape Negrais - Preparis -
    # Andamans - Nicobars - Pulau Rondo (west of it is the Bay, east the Andaman Sea); Adam's Bridge.
    ("Bay of Bengal", ((5.92, 80.59), (7.5, 80.7), (9.1, 79.3), (10.0, 78.5), (16.0, 79.5),
                       (21.0, 85.0), (23.0, 88.0), (23.0, 91.5), (20.0, 93.8), (18.5, 94.8),
                       (16.8, 95.0), (16.0, 94.2), (14.87, 93.67), (13.7, 93.0), (11.5, 92.6),
                       (9.2, 92.8), (7.0, 93.8), (5.97, 95.1))),
    # Gates: Singapore Strait east end - Tanjung Datu (2.08 N 109.65 E); Palawan - Mindoro - Luzon;
    # Luzon Strait via Y'Ami (21.1 N 121.95 E) to Taiwan's south cape; Taiwan Strait, Fuki Kaku
    # (25.3 N 121.5 E) - Haitan (25.4 N 119.8 E). Gulfs of Thailand and Tonkin included.
    ("South China Sea", ((1.37, 104.28), (2.08, 109.65), (1.2, 111.0), (2.8, 114.0), (4.3, 115.8),
                         (6.0, 116.8), (7.03, 116.73), (7.95, 117.0), (8.4, 117.25), (9.3, 118.1),
                         (10.5, 119.3), (12.9, 120.5), (13.77, 120.65), (15.5, 120.8), (17.5, 121.0),
                         (18.5, 121.5), (21.1, 121.95), (21.9, 120.85), (23.5, 120.8), (25.3, 121.5),
                         (25.4, 119.8), (24.5, 117.0), (23.3, 113.3), (22.5, 109.0), (22.0, 106.5),
                         (20.5, 105.0), (18.5, 105.2), (17.0, 106.2), (15.5, 107.5), (14.0, 108.2),
                         (11.5, 107.5), (10.5, 105.8), (12.5, 104.0), (14.0, 100.0), (12.0, 99.4),
                         (10.5, 98.95), (8.0, 99.6), (6.5, 100.6), (4.0, 101.8), (2.0, 103.2),
                         (1.4, 103.7))),
    # Gates: Yucatan Channel, Cabo Catoche (21.6 N 87.1 W) - Cabo San Antonio (21.85 N 84.95 W);
    # Florida Strait along 83 W from Cuba to the Dry Tortugas, then the Keys to Florida.
    ("Gulf of Mexico", ((21.6, -87.1), (20.0, -89.0), (17.5, -92.5), (17.8, -95.8), (19.5, -97.5),
                        (22.0, -98.5), (25.0, -98.5), (28.0, -98.0), (30.0, -96.0), (30.8, -92.0),
                        (31.0, -88.0), (30.8, -85.0), (29.8, -83.0), (27.5, -81.5), (25.7, -80.9),
                        (25.25, -80.45), (24.85, -80.75), (24.55, -81.8), (24.58, -83.0),
                        (22.7, -83.0), (22.3, -84.3), (21.85, -84.95))),
    # Gates: Yucatan Channel; Windward Passage, Maisi (20.25 N 74.13 W) - Mole St Nicolas; Mona
    # Passage; the Virgin Islands and the Lesser Antilles to Grenada, Trinidad (Galera Point) and
    # Punta Baja (9.53 N 61.0 W). South edge on the Central American isthmus.
    ("Caribbean Sea", ((21.85, -84.95), (22.4, -83.7), (22.9, -82.4), (22.4, -80.0), (21.5, -78.0),
                       (20.5, -76.0), (20.25, -74.13), (19.82, -73.38), (19.75, -73.0),
                       (19.5, -72.2), (19.0, -70.5), (18.6, -68.35), (18.36, -67.27),
                       (18.25, -66.5), (18.2, -65.6), (18.35, -64.9), (18.45, -64.4),
                       (18.6, -63.43), (18.2, -63.05), (17.9, -62.85), (17.3, -62.7),
                       (16.75, -62.2), (16.3, -61.6), (15.4, -61.35), (14.6, -61.0),
                       (13.9, -60.95), (13.25, -61.2), (12.1, -61.7), (10.83, -60.92),
                       (10.13, -60.99), (9.53, -61.0), (9.0, -62.0), (8.0, -68.0), (8.0, -75.0),
                       (7.5, -77.6), (8.75, -78.3), (9.2, -79.6), (8.7, -80.6), (8.6, -82.0),
                       (9.5, -83.5), (10.6, -84.8), (12.5, -85.5), (14.5, -87.5), (15.0, -90.5),
                       (17.0, -90.5), (20.0, -89.0), (21.6, -87.1))),
    # Gate: Nuvuk Point (62.35 N 78.1 W) - Southampton Island; Roes Welcome Sound included.
    ("Hudson Bay", ((50.5, -82.0), (50.5, -78.5), (55.5, -76.0), (58.5, -76.5), (62.0, -77.0),
                    (62.35, -78.1), (63.5, -80.1), (64.2, -83.0), (65.8, -86.0), (65.5, -90.0),
                    (60.0, -96.0), (55.0, -92.0))),
    # Gate: Skagen (57.75 N 10.6 E) - Sweden; the Kattegat and the Danish straits are included.
    ("Baltic Sea", ((57.75, 10.6), (58.0, 12.0), (62.0, 14.0), (66.5, 19.0), (67.0, 26.0),
                    (64.0, 30.5), (61.0, 29.5), (59.5, 31.5), (57.5, 28.5), (56.0, 26.0),
                    (54.5, 22.0), (53.5, 18.0), (53.0, 14.0), (54.5, 9.5), (55.5, 9.0),
                    (56.5, 9.3), (57.3, 9.9))),
    # Gates: Dover Strait, Walde (50.98 N 1.92 E) - Leathercoat Point (51.17 N 1.37 E); Dunnet Head -
    # Orkney - Shetland - Muckle Flugga, 0 deg 53' W to 61 N, 61 N to Norway; Skagen - Sweden.
    # The Skagerrak is included.
    ("North Sea", ((51.17, 1.37), (51.2, 0.5), (53.0, -1.0), (55.0, -2.5), (55.9, -3.9),
                   (57.3, -4.7), (58.3, -4.0), (58.67, -3.37), (59.0, -3.0), (59.35, -2.4),
                   (59.85, -1.27), (60.85, -0.88), (61.0, -0.88), (61.0, 4.95), (60.5, 8.0),
                   (60.0, 10.0), (59.3, 11.8), (58.0, 12.0), (57.75, 10.6), (57.3, 9.9),
                   (56.5, 9.3), (55.5, 9.0), (54.5, 9.5), (53.5, 10.0), (52.5, 7.0), (51.0, 4.5),
                   (50.98, 1.92))),
)

SOUTHERN_OCEAN_NORTH_LAT_DEG = -60.0

# West to east; the Arctic Ocean is the water north of this line.
ARCTIC_SOUTH_LIMIT = (
    (66.56, -180.0), (66.56, -166.5),                      # Arctic Circle: IHO Bering Sea limit
    (65.6, -164.5), (65.5, -162.0), (65.0, -150.0), (64.0, -135.0), (60.0, -110.0), (55.0, -100.0),
    (50.0, -85.0), (56.0, -70.0), (57.5, -65.0), (59.5, -64.3),  # land, south of Hudson and Ungava Bays
    (60.4, -64.5), (61.6, -64.7),                          # Cape Chidley - Resolution Island
    (64.0, -70.0), (67.0, -70.0), (70.0, -70.5),           # Baffin Island
    (70.0, -50.0),                                         # 70 N: Baffin Bay south limit
    (68.25, -29.5), (66.43, -23.13),                       # Cape Nansen - Straumnes
    (65.0, -18.0), (65.08, -13.5),                         # Iceland to Gerpir
    (70.83, -9.05), (71.15, -7.95), (76.45, 16.5),         # Jan Mayen - Sorkapp (Spitsbergen)
    (74.4, 19.0), (71.17, 25.78),                          # Bear Island - North Cape
    (69.3, 28.5), (66.5, 31.5), (63.5, 34.0), (63.5, 39.0), (65.0, 45.0),  # south of the White Sea
    (65.5, 60.0), (65.5, 100.0), (66.5, 140.0), (66.5, 165.0), (66.56, 180.0),  # Siberia (land)
    (90.0, 180.0), (90.0, -180.0),
)

# Asia/Australia divide, north to south: the Indian Ocean's eastern limit (IHO), through land elsewhere.
_ASIA_AUSTRALIA_DIVIDE = (
    (22.0, 98.0), (16.0, 98.7), (11.0, 98.9), (9.5, 98.8), (8.0, 99.6), (6.5, 100.6), (4.0, 101.8),
    (2.0, 103.2), (1.4, 103.7),                            # Malay peninsula
    (1.1, 102.98),                                         # Singapore Strait to Sumatra
    (0.0, 102.5), (-3.0, 104.0), (-5.93, 104.58),                        # Sumatra to Vlakke Hoek
    (-6.77, 105.2),                                        # across Sunda Strait to Java Head
    (-7.3, 110.0), (-8.0, 114.0), (-8.35, 115.1), (-8.6, 116.3), (-8.7, 118.0), (-8.6, 121.0),
    (-9.6, 124.5), (-8.4, 127.3),                          # Java and the Lesser Sundas to Timor
    (-11.3, 131.8), (-11.4, 132.4), (-12.5, 133.0),        # Cape Don (Timor Sea | Arafura Sea)
    (-20.0, 135.0), (-30.0, 140.0),                        # Australia
    (-38.85, 143.5), (-39.9, 143.9), (-40.68, 144.7),      # Cape Otway - King Island - Cape Grim
    (-42.5, 146.0), (-43.65, 146.83), (-60.0, 146.92),     # Tasmania, South East Cape, 146 55' E
)

INDIAN_SECTOR = (
    (-60.0, 20.0), (-34.83, 20.0),                         # 20 E to Cape Agulhas
    (-25.0, 27.0), (-10.0, 30.0), (5.0, 30.0), (20.0, 30.0), (30.0, 32.0),   # Africa to Suez
    (33.0, 36.5), (37.5, 44.0), (36.0, 50.0), (37.0, 60.0), (37.0, 75.0), (30.0, 90.0),  # Asia
) + _ASIA_AUSTRALIA_DIVIDE

# The Americas divide, south to north, in longitudes continued past 180 (-67.27 -> 292.73).
_AMERICAS_DIVIDE = (
    (-60.0, 292.73), (-55.98, 292.73),                     # meridian of Cape Horn
    (-50.0, 288.5), (-40.0, 290.0), (-20.0, 293.0), (-5.0, 284.0), (5.0, 283.5),  # the Andes
    (7.5, 282.4), (8.75, 281.7), (9.2, 280.4), (8.7, 279.4), (8.6, 278.0), (9.5, 276.5),
    (10.6, 275.2), (12.5, 274.5), (14.5, 272.5), (15.0, 269.5), (17.0, 267.0),  # the isthmus
    (18.5, 263.5), (20.0, 261.0), (25.0, 256.0), (32.0, 250.0), (40.0, 248.0), (50.0, 245.0),
    (60.0, 230.0), (66.56, 210.0), (90.0, 210.0),
)

PACIFIC_SECTOR = (
    tuple(reversed(_ASIA_AUSTRALIA_DIVIDE))
    + ((30.0, 100.0), (50.0, 100.0), (90.0, 100.0))
    + tuple(reversed(_AMERICAS_DIVIDE))
)


# ---- reading the source ---------------------------------------------------------------------

@dataclass(frozen=True)
class Country:
    name: str
    iso_a3: str
    continent: str
    rings: tuple[np.ndarray, ...]   # each (n, 2) float64 [lon, lat], closed


class SourceError(ValueError):
    """The shapefile is missing, corrupt, or not the pinned version."""


def read_dbf(data: bytes, encoding: str = "latin-1") -> list[dict[str, str]]:
    """dBase III table: 32-byte header, 32-byte field descriptors up to 0x0D, fixed-width records."""
    if len(data) < 32:
        raise SourceError("dbf: shorter than its header")
    n_records, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields = []
    offset = 32
    while data[offset] != 0x0D:
        desc = data[offset:offset + 32]
        fields.append((desc[:11].split(b"\0")[0].decode("ascii"), desc[16]))
        offset += 32
    if header_len + n_records * record_len > len(data):
        raise SourceError("dbf: records run past the end of the file")
    records = []
    for i in range(n_records):
        raw = data[header_len + i * record_len: header_len + (i + 1) * record_len]
        pos = 1                       # deletion flag
        record = {}
        for name, width in fields:
            record[name] = raw[pos:pos + width].decode(encoding).strip()
            pos += width
        records.append(record)
    return records


def read_shp_polygons(data: bytes) -> list[tuple[np.ndarray, ...]]:
    """ESRI shapefile of polygons (type 5): per record, its rings as (n, 2) [x, y] arrays."""
    if len(data) < 100 or struct.unpack(">i", data[:4])[0] != 9994:
        raise SourceError("shp: not a shapefile (file code is not 9994)")
    if struct.unpack("<i", data[32:36])[0] != 5:
        raise SourceError("shp: not a polygon shapefile (shape type is not 5)")
    shapes = []
    offset = 100
    while offset < len(data):
        _, content_words = struct.unpack(">ii", data[offset:offset + 8])
        content = data[offset + 8: offset + 8 + 2 * content_words]
        offset += 8 + 2 * content_words
        shape_type = struct.unpack("<i", content[:4])[0]
        if shape_type == 0:
            shapes.append(())
            continue
        if shape_type != 5:
            raise SourceError(f"shp: record {len(shapes)} has shape type {shape_type}, not 5")
        n_parts, n_points = struct.unpack("<ii", content[36:44])
        parts = struct.unpack(f"<{n_parts}i", content[44:44 + 4 * n_parts])
        start = 44 + 4 * n_parts
        points = np.frombuffer(content[start:start + 16 * n_points], dtype="<f8").reshape(-1, 2)
        bounds = list(parts) + [n_points]
        shapes.append(tuple(points[bounds[i]:bounds[i + 1]].astype(np.float64) for i in range(n_parts)))
    return shapes


def read_countries(wheel: Path) -> tuple[list[Country], dict[str, str]]:
    """The countries from the wheel, and the SHA-256 of the wheel and the members used."""
    try:
        wheel_bytes = wheel.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read the wheel {wheel}: {exc}") from exc
    hashes = {"wheel": hashlib.sha256(wheel_bytes).hexdigest()}
    try:
        with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
            members = {ext: archive.read(MEMBER + ext) for ext in (".shp", ".dbf")}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SourceError(f"{wheel} is not a geopandas wheel with {MEMBER}.shp/.dbf: {exc}") from exc
    for ext, data in members.items():
        digest = hashlib.sha256(data).hexdigest()
        hashes[MEMBER.rsplit("/", 1)[1] + ext] = digest
        if digest != PINNED_SHA256[ext]:
            raise SourceError(f"{MEMBER}{ext} has SHA-256 {digest}, expected {PINNED_SHA256[ext]}: "
                              "not the pinned Natural Earth input (geopandas 0.14.4)")
    records = read_dbf(members[".dbf"])
    shapes = read_shp_polygons(members[".shp"])
    if len(records) != len(shapes):
        raise SourceError(f"dbf has {len(records)} records but shp has {len(shapes)} shapes")
    countries = [Country(r["name"], r["iso_a3"], r["continent"], rings)
                 for r, rings in zip(records, shapes)]
    return countries, hashes


# ---- rasterising ------------------------------------------------------------------------------

def cell_centres() -> tuple[np.ndarray, np.ndarray]:
    lat_deg = LAT0_DEG + (np.arange(N_ROWS) + 0.5) * CELL_DEG
    lon_deg = LON0_DEG + (np.arange(N_COLS) + 0.5) * CELL_DEG
    return lat_deg, lon_deg


def rasterize_rings(rings_lonlat: list[np.ndarray]) -> np.ndarray:
    """Cells whose centre lies inside the rings by the even-odd rule (holes cancel), as a bool mask.

    Scanline: for each row's centre latitude, the crossings of every edge that straddles it (the
    half-open rule counts a vertex once), sorted and paired; cells whose centre longitude lies in
    [x_in, x_out) are inside. Longitudes beyond +-180 wrap onto the grid.
    """
    mask = np.zeros((N_ROWS, N_COLS), dtype=bool)
    x1 = np.concatenate([r[:-1, 0] for r in rings_lonlat])
    y1 = np.concatenate([r[:-1, 1] for r in rings_lonlat])
    x2 = np.concatenate([r[1:, 0] for r in rings_lonlat])
    y2 = np.concatenate([r[1:, 1] for r in rings_lonlat])
    lat_deg, _ = cell_centres()
    rows = np.nonzero((lat_deg >= min(y1.min(), y2.min())) & (lat_deg <= max(y1.max(), y2.max())))[0]
    for row in rows:
        y = lat_deg[row]
        straddle = (y1 <= y) != (y2 <= y)
        if not straddle.any():
            continue
        xa, ya, xb, yb = x1[straddle], y1[straddle], x2[straddle], y2[straddle]
        xs = np.sort(xa + (y - ya) * (xb - xa) / (yb - ya))
        # First column whose centre is >= x: centre(j) = LON0 + (j + 0.5) * CELL.
        cols = np.ceil((xs - LON0_DEG) / CELL_DEG - 0.5).astype(np.int64)
        for j_in, j_out in zip(cols[0::2], cols[1::2]):
            if j_out > j_in:
                mask[row, np.arange(j_in, j_out) % N_COLS] = True
    return mask


def polygon_mask(points_latlon) -> np.ndarray:
    """A hand-placed polygon given as (lat, lon) points, rasterised like the countries."""
    pts = np.asarray(points_latlon, dtype=np.float64)
    ring = np.vstack([pts[:, ::-1], pts[:1, ::-1]])     # -> closed [lon, lat]
    return rasterize_rings([ring])


def _lat_lon_grids() -> tuple[np.ndarray, np.ndarray]:
    lat_deg, lon_deg = cell_centres()
    return np.meshgrid(lat_deg, lon_deg, indexing="ij")


def _ring_region(country: Country, ring: np.ndarray) -> str | None:
    """The region of one ring of a country, or None for water. Point-wise splits come later."""
    lon_min, lat_min = ring.min(axis=0)
    lon_max, lat_max = ring.max(axis=0)
    name = country.name
    if country.continent == SEA_COUNTRY_CONTINENT:
        return None
    if name in MIDDLE_EAST:
        return "Middle East"
    if name == "Turkey":                      # East Thrace is a ring of its own
        return "Europe" if lon_max < 29.5 and lat_min > 40.0 else "Middle East"
    if name in CENTRAL_AMERICA:
        return "Central America"
    if name in CARIBBEAN:
        return "Caribbean"
    if name == "Greenland":
        return "Greenland"
    if name == "Australia":
        return "Australia"
    if name in OCEANIA:
        return "Oceania"
    if name == "France" and lon_max < 0.0 and lat_max < 10.0:
        return "South America"                # French Guiana
    if name == "Indonesia" and lon_min >= 130.5:
        return "Oceania"                      # Indonesian New Guinea
    if name == "United States of America" and lon_max < -150.0 and lat_max < 30.0:
        return "Oceania"                      # Hawaii
    if country.continent not in CONTINENT_REGION:
        raise SourceError(f"country {name!r} has continent {country.continent!r}, which no rule maps")
    return CONTINENT_REGION[country.continent]


def land_regions(countries: list[Country]) -> np.ndarray:
    """int16 raster of region ids on land, -1 on water."""
    raster = np.full((N_ROWS, N_COLS), -1, dtype=np.int16)
    lat_grid, lon_grid = _lat_lon_grids()
    for country in countries:
        parity = np.zeros((N_ROWS, N_COLS), dtype=bool)
        ring_region = np.full((N_ROWS, N_COLS), -1, dtype=np.int16)
        for ring in country.rings:
            inside = rasterize_rings([ring])
            parity ^= inside
            region = _ring_region(country, ring)
            region_id = -1 if region is None else REGION_ID[region]
            ring_region[inside & (ring_region == -1)] = region_id
        land = parity & (ring_region >= 0)
        if country.name == "Russia":
            urals_lat, urals_lon = np.array(URALS_LON_BY_LAT).T
            urals = np.interp(lat_grid, urals_lat, urals_lon)
            europe = (lon_grid >= 0.0) & (lon_grid < urals)
            ring_region = np.where(europe, REGION_ID["Europe"], REGION_ID["Asia"]).astype(np.int16)
        if country.name == "Egypt":
            sinai = polygon_mask(SINAI)
            ring_region = np.where(sinai, REGION_ID["Middle East"], REGION_ID["Africa"]).astype(np.int16)
        raster[land] = ring_region[land]
    return raster


def water_regions(land: np.ndarray) -> np.ndarray:
    """Fill the water cells (-1 in land) by the rules in the module docstring."""
    raster = land.copy()
    water = land < 0
    lat_grid, _ = _lat_lon_grids()
    unassigned = water.copy()

    def assign(mask: np.ndarray, name: str) -> None:
        take = mask & unassigned
        raster[take] = REGION_ID[name]
        unassigned[take] = False

    for name, polygon in SEAS:
        assign(polygon_mask(polygon), name)

    assign(lat_grid < SOUTHERN_OCEAN_NORTH_LAT_DEG, "Southern Ocean")
    assign(polygon_mask(ARCTIC_SOUTH_LIMIT), "Arctic Ocean")
    assign(polygon_mask(INDIAN_SECTOR), "Indian Ocean")
    assign(polygon_mask(PACIFIC_SECTOR), "Pacific Ocean")
    assign(np.ones_like(unassigned), "Atlantic Ocean")
    return raster


def build_raster(countries: list[Country]) -> np.ndarray:
    raster = water_regions(land_regions(countries))
    if raster.min() < 0 or raster.max() >= len(REGIONS):
        raise AssertionError("a cell has no region")
    return raster.astype(np.uint8)


# ---- writing ----------------------------------------------------------------------------------

def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format (zip of .npy, deflated) with fixed timestamps: byte-reproducible."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, _npy_bytes(arrays[key]), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def build(wheel: Path, out: Path) -> dict:
    countries, hashes = read_countries(wheel)
    raster = build_raster(countries)
    build_info = {
        "builder": "tools/build_regions.py",
        "format_version": FORMAT_VERSION,
        "cell_deg": CELL_DEG,
        "grid": {"lat0_deg": LAT0_DEG, "lon0_deg": LON0_DEG, "rows": N_ROWS, "cols": N_COLS,
                 "order": "raster[row, col], row 0 at the south, col 0 at -180, cell centre rule"},
        "source_member": MEMBER,
        "sha256": hashes,
        "countries": len(countries),
    }
    arrays = {
        "raster": raster,
        "names": np.array([r.name for r in REGIONS]),
        "kinds": np.array([r.kind for r in REGIONS]),
        "articles": np.array([r.article for r in REGIONS]),
        "lat0_deg": np.float64(LAT0_DEG),
        "lon0_deg": np.float64(LON0_DEG),
        "cell_deg": np.float64(CELL_DEG),
        "format_version": np.int64(FORMAT_VERSION),
        "source": np.array(SOURCE_TEXT),
        "build": np.array(json.dumps(build_info, sort_keys=True)),
    }
    write_npz(out, arrays)
    return build_info


def preview(npz_path: Path, png_path: Path) -> None:
    """A picture of the map with every region labelled, for reviewing the boundaries by eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(npz_path, allow_pickle=False) as data:
        raster, names = data["raster"], data["names"]
    from matplotlib.colors import BoundaryNorm, ListedColormap

    colours = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    cmap = ListedColormap(colours[:len(names)])
    fig, ax = plt.subplots(figsize=(24, 12), dpi=100)
    ax.imshow(raster, origin="lower", extent=(-180, 180, -90, 90), cmap=cmap,
              norm=BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names)), interpolation="nearest")
    lat_deg, lon_deg = cell_centres()
    for region_id, name in enumerate(names):
        rows, cols = np.nonzero(raster == region_id)
        if rows.size:
            ax.text(float(np.median(lon_deg[cols])), float(np.median(lat_deg[rows])), str(name),
                    fontsize=8, ha="center", color="white", weight="bold")
    ax.set_xticks(range(-180, 181, 20))
    ax.set_yticks(range(-90, 91, 10))
    ax.grid(alpha=0.3)
    fig.savefig(png_path, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build_regions",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="geopandas-0.14.4-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz (default {DEFAULT_OUT})")
    parser.add_argument("--preview", type=Path, help="also draw the map to this PNG")
    args = parser.parse_args(argv)
    try:
        info = build(args.wheel, args.out)
    except SourceError as exc:
        print(f"build_regions: {exc}", file=sys.stderr)
        return 2
    if args.preview:
        preview(args.out, args.preview)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest}) "
          f"from {info['countries']} countries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
