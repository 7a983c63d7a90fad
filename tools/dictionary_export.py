"""Dictionary exports for ground systems: JSON (Sunlit's own shape) and XTCE 1.2 (OMG's
telemetry and command exchange format, which Yamcs and COSMOS-era tools read).

XTCE mapping: one SpaceSystem per component; telemetry channels are Parameters with a type per
channel (units and alarm ranges: yellow limits as a WarningRange, red as a CriticalRange, each
range the values that are *not* in alarm); commands are MetaCommands whose arguments carry their
ranges or enumerations; a hazardous command has DefaultSignificance consequenceLevel="critical".
XTCE has no event element: events go in each SpaceSystem's AncillaryDataSet.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from flight.dictionary import ArgDef, ChannelDef, Dictionary

XTCE_NS = "http://www.omg.org/spec/XTCE/20180204"


def to_json_text(dictionary: Dictionary) -> str:
    return json.dumps(dictionary.to_json(), indent=2, sort_keys=True) + "\n"


def _sub(parent: ET.Element, tag: str, **attrs: Any) -> ET.Element:
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})


def _units(parent: ET.Element, units: str) -> None:
    if units:
        unit_set = _sub(parent, "UnitSet")
        _sub(unit_set, "Unit").text = units


def _range_attrs(lo: float | None, hi: float | None, exclusive: bool) -> dict[str, float | None]:
    if exclusive:
        return {"minExclusive": lo, "maxExclusive": hi}
    return {"minInclusive": lo, "maxInclusive": hi}


def _parameter_type(parent: ET.Element, channel: ChannelDef) -> str:
    name = f"{channel.name}_Type"
    kind = channel.type
    if kind in ("int", "float"):
        tag = "IntegerParameterType" if kind == "int" else "FloatParameterType"
        ptype = _sub(parent, tag, name=name, sizeInBits=64, **({"signed": "true"} if kind == "int" else {}))
        _units(ptype, channel.units)
        if kind == "int":
            _sub(ptype, "IntegerDataEncoding", sizeInBits=64, encoding="twosComplement")
        else:
            _sub(ptype, "FloatDataEncoding", sizeInBits=64)
        if channel.min is not None or channel.max is not None:
            _sub(ptype, "ValidRange", **_range_attrs(channel.min, channel.max, False))
        yellow = (channel.yellow_low, channel.yellow_high)
        red = (channel.red_low, channel.red_high)
        if any(v is not None for v in yellow + red):
            alarm = _sub(_sub(ptype, "DefaultAlarm"), "StaticAlarmRanges")
            # A value at or beyond a limit is in alarm: the range of values not in alarm is open.
            if any(v is not None for v in yellow):
                _sub(alarm, "WarningRange", **_range_attrs(*yellow, True))
            if any(v is not None for v in red):
                _sub(alarm, "CriticalRange", **_range_attrs(*red, True))
    elif kind == "bool":
        ptype = _sub(parent, "BooleanParameterType", name=name, zeroStringValue="false", oneStringValue="true")
        _sub(ptype, "IntegerDataEncoding", sizeInBits=8)
    elif kind == "enum":
        ptype = _sub(parent, "EnumeratedParameterType", name=name)
        _sub(ptype, "IntegerDataEncoding", sizeInBits=16)
        enums = _sub(ptype, "EnumerationList")
        for i, label in enumerate(channel.values):
            _sub(enums, "Enumeration", value=i, label=label)
    else:  # string, and list/map carried as their JSON text
        ptype = _sub(parent, "StringParameterType", name=name)
        _sub(_sub(ptype, "StringDataEncoding", encoding="UTF-8"), "Variable", maxSizeInBits=65536)
    if channel.description:
        ptype.set("shortDescription", channel.description[:256])
    return name


def _argument_type(parent: ET.Element, command: str, arg: ArgDef) -> str:
    name = f"{command}_{arg.name}_Type"
    if arg.type in ("int", "float"):
        tag = "IntegerArgumentType" if arg.type == "int" else "FloatArgumentType"
        atype = _sub(parent, tag, name=name, sizeInBits=64)
        _units(atype, arg.units)
        if arg.type == "int":
            _sub(atype, "IntegerDataEncoding", sizeInBits=64, encoding="twosComplement")
            lo = arg.min if arg.min is not None and arg.min > -(2**63) else None
            hi = arg.max if arg.max is not None and arg.max < 2**63 else None
        else:
            _sub(atype, "FloatDataEncoding", sizeInBits=64)
            lo, hi = arg.min, arg.max
        if lo is not None or hi is not None:
            valid = _sub(atype, "ValidRangeSet")
            _sub(valid, "ValidRange", **_range_attrs(lo, hi, False))
    elif arg.type == "bool":
        atype = _sub(parent, "BooleanArgumentType", name=name, zeroStringValue="false", oneStringValue="true")
        _sub(atype, "IntegerDataEncoding", sizeInBits=8)
    elif arg.type == "enum":
        atype = _sub(parent, "EnumeratedArgumentType", name=name)
        _sub(atype, "IntegerDataEncoding", sizeInBits=16)
        enums = _sub(atype, "EnumerationList")
        for i, label in enumerate(arg.values):
            _sub(enums, "Enumeration", value=i, label=label)
    else:
        atype = _sub(parent, "StringArgumentType", name=name)
        _sub(_sub(atype, "StringDataEncoding", encoding="UTF-8"), "Variable", maxSizeInBits=arg.max_length * 32)
        _sub(atype, "SizeRangeInCharacters", minInclusive=arg.min_length, maxInclusive=arg.max_length)
    return name


def to_xtce(dictionary: Dictionary, name: str = "sunlit") -> str:
    """The dictionary as an XTCE 1.2 document (a string)."""
    # Tags are written unqualified under a default namespace declared on the root.
    root = ET.Element("SpaceSystem", {"name": name, "xmlns": XTCE_NS})
    _sub(root, "LongDescription").text = "Sunlit onboard runtime: commands, telemetry and events"
    for component_name, component in sorted(dictionary.components.items()):
        system = _sub(root, "SpaceSystem", name=component_name, shortDescription=component.description[:256] or None)
        events = [e for e in dictionary.events.values() if e.component == component_name]
        if events:
            ancillary = _sub(system, "AncillaryDataSet")
            for event in events:
                item = _sub(ancillary, "AncillaryData", name=f"event:{event.name}")
                item.text = f"severity={event.severity}; throttle={event.throttle}; {event.description}"
        channels = [c for c in dictionary.channels.values() if c.component == component_name]
        if channels:
            telemetry = _sub(system, "TelemetryMetaData")
            types = _sub(telemetry, "ParameterTypeSet")
            parameters = _sub(telemetry, "ParameterSet")
            for channel in channels:
                type_name = _parameter_type(types, channel)
                _sub(parameters, "Parameter", name=channel.name, parameterTypeRef=type_name,
                     shortDescription=channel.description[:256] or None)
        commands = dictionary.commands_of(component_name)
        if commands:
            command_meta = _sub(system, "CommandMetaData")
            arg_types = _sub(command_meta, "ArgumentTypeSet")
            meta_commands = _sub(command_meta, "MetaCommandSet")
            for opcode, command in sorted(commands.items()):
                meta = _sub(meta_commands, "MetaCommand", name=opcode, shortDescription=command.description[:256] or None)
                if command.hazardous:
                    _sub(meta, "DefaultSignificance", consequenceLevel="critical",
                         reasonForWarning="hazardous: arm with dispatcher.ARM first")
                if command.args:
                    arg_list = _sub(meta, "ArgumentList")
                    for arg in command.args:
                        type_name = _argument_type(arg_types, opcode, arg)
                        attrs = {"name": arg.name, "argumentTypeRef": type_name}
                        if not arg.required:
                            attrs["initialValue"] = str(arg.default).lower() if isinstance(arg.default, bool) else arg.default
                        _sub(arg_list, "Argument", **attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
