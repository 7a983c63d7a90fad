"""`sunlit dict`: JSON and XTCE exports carry every command, channel and limit of the dictionary."""

import json
import xml.etree.ElementTree as ET

from flight.dictionary import default_dictionary
from tools.cli import main
from tools.dictionary_export import XTCE_NS

NS = {"x": XTCE_NS}


def test_json_export_round_trips_every_declaration(tmp_path):
    out = tmp_path / "dict.json"
    assert main(["dict", "--json", "-o", str(out)]) == 0
    data = json.loads(out.read_text())["components"]
    d = default_dictionary()
    exported_commands = {f"{c}.{op}" for c, comp in data.items() for op in comp["commands"]}
    exported_channels = {f"{c}.{ch}" for c, comp in data.items() for ch in comp["telemetry"]}
    exported_events = {f"{c}.{e}" for c, comp in data.items() for e in comp["events"]}
    assert exported_commands == set(d.commands)
    assert exported_channels == set(d.channels)
    assert exported_events == set(d.events)


def test_xtce_export_is_xml_with_parameters_commands_and_alarms(tmp_path):
    out = tmp_path / "dict.xml"
    assert main(["dict", "--xtce", "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.tag == f"{{{XTCE_NS}}}SpaceSystem"
    d = default_dictionary()
    eps = root.find("x:SpaceSystem[@name='eps']", NS)
    params = {p.get("name") for p in eps.findall(".//x:Parameter", NS)}
    assert params == {c.name for c in d.channels.values() if c.component == "eps"}
    switch = eps.find(".//x:MetaCommand[@name='SET_SWITCH']", NS)
    assert switch.find("x:DefaultSignificance", NS).get("consequenceLevel") == "critical"
    assert [a.get("name") for a in switch.findall(".//x:Argument", NS)] == ["switch", "on"]
    soc_type = eps.find(".//x:FloatParameterType[@name='battery_soc_Type']", NS)
    assert soc_type.find(".//x:CriticalRange", NS).get("minExclusive") == "0.3"
    assert soc_type.find(".//x:WarningRange", NS).get("minExclusive") == "0.35"
    cap = root.find(".//x:FloatArgumentType[@name='SET_POWER_CAP_cap_w_Type']", NS)
    valid = cap.find(".//x:ValidRange", NS)
    assert (valid.get("minInclusive"), valid.get("maxInclusive")) == ("200.0", "700.0")
    all_commands = {f"{s.get('name')}.{m.get('name')}" for s in root.findall("x:SpaceSystem", NS)
                    for m in s.findall(".//x:MetaCommand", NS)}
    assert all_commands == set(d.commands)


def test_dict_help_for_one_command_and_unknown_name(capsys):
    assert main(["dict", "gpu.SET_POWER_CAP"]) == 0
    assert "cap_w: float in [200, 700] W" in capsys.readouterr().out
    assert main(["dict", "gpu.WARP"]) == 2
    assert "no command or channel 'gpu.WARP'" in capsys.readouterr().err
