use super::*;

fn feeds(text: &str) -> PlantFeeds {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn check(text: &str) -> Result<PlantFeeds, FieldError> {
    let mut f = feeds(text);
    f.validate("plants[0]").map(|()| f)
}

const GOOD: &str = r#"
[[sources]]
id = "plc"
kind = "modbus"
endpoint = "127.0.0.1:5020"

[[sources]]
id = "scada"
kind = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"

[[meters]]
id = "gas"
quantity = "volume_flow"
unit = "M3/H"
source = "plc"
modbus = { table = "holding", register = 100, type = "f32" }
fuel = "natural_gas"
calorific_value = { value_kwh_per_unit = 10.55, unit = "m3", basis = "gross" }
range = [0.0, 5000.0]

[[meters]]
id = "steam-t"
quantity = "temperature"
unit = "degC"
source = "scada"
node_id = "ns=2;s=Plant-001.SteamTemp"

[[meters]]
id = "heat"
quantity = "energy_total"
unit = "MWh"
"#;

#[test]
fn a_good_plant_validates_and_units_become_canonical() {
    let f = check(GOOD).unwrap();
    assert_eq!(f.meter("gas").unwrap().unit, "m3/h");
    assert_eq!(f.meter("steam-t").unwrap().unit, "C");
    assert_eq!(f.meter("heat").unwrap().poll_ms, 1_000);
    assert!(f.meter("gas").unwrap().in_range(4_999.0));
    assert!(!f.meter("gas").unwrap().in_range(5_001.0));
}

/// Each bad edit of the good plant, the key its error must name and a phrase of its rule.
#[test]
fn every_rule_names_its_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "unit = \"M3/H\"",
            "unit = \"m3/min\"",
            "plants[0].meters[0].unit",
            "unknown volume flow unit",
        ),
        (
            "unit = \"degC\"",
            "unit = \"bar\"",
            "plants[0].meters[1].unit",
            "unknown temperature unit",
        ),
        (
            "type = \"f32\" }",
            "type = \"f32\", count = 1 }",
            "plants[0].meters[0].modbus.count",
            "a f32 spans 2 registers, not 1",
        ),
        (
            "register = 100",
            "register = 65535",
            "plants[0].meters[0].modbus.register",
            "runs past register 65535",
        ),
        (
            "ns=2;s=Plant-001.SteamTemp",
            "ns=two;s=X",
            "plants[0].meters[1].node_id",
            "namespace index",
        ),
        (
            "ns=2;s=Plant-001.SteamTemp",
            "ns=2;x=X",
            "plants[0].meters[1].node_id",
            "i=, s=, g= or b=",
        ),
        (
            "source = \"scada\"",
            "source = \"dcs\"",
            "plants[0].meters[1].source",
            "no source \"dcs\"",
        ),
        (
            "source = \"scada\"",
            "source = \"plc\"",
            "plants[0].meters[1].node_id",
            "source plc is modbus",
        ),
        (
            "range = [0.0, 5000.0]",
            "range = [10.0, 5.0]",
            "plants[0].meters[0].range",
            "finite low < high",
        ),
        (
            "fuel = \"natural_gas\"\ncalorific_value = { value_kwh_per_unit = 10.55, unit = \"m3\", basis = \"gross\" }",
            "fuel = \"natural_gas\"",
            "plants[0].meters[0].calorific_value",
            "required for a fuel metered by mass or volume",
        ),
        (
            "unit = \"m3\", basis",
            "unit = \"kg\", basis",
            "plants[0].meters[0].calorific_value.unit",
            "must be m3",
        ),
        (
            "value_kwh_per_unit = 10.55",
            "value_kwh_per_unit = -1.0",
            "plants[0].meters[0].calorific_value.value_kwh_per_unit",
            "> 0",
        ),
        (
            "unit = \"MWh\"",
            "unit = \"MWh\"\nfuel = \"gas\"",
            "plants[0].meters[2].basis",
            "required for a fuel metered as energy",
        ),
        (
            "unit = \"degC\"",
            "unit = \"degC\"\nfuel = \"gas\"",
            "plants[0].meters[1].fuel",
            "cannot be a fuel meter",
        ),
        (
            "id = \"heat\"",
            "id = \"gas\"",
            "plants[0].meters[2].id",
            "duplicate meter id gas",
        ),
        (
            "id = \"heat\"",
            "id = \"heat meter\"",
            "plants[0].meters[2].id",
            "' '",
        ),
        (
            "unit = \"MWh\"",
            "unit = \"MWh\"\npoll_ms = 1",
            "plants[0].meters[2].poll_ms",
            "must be within [10,",
        ),
        (
            "unit = \"MWh\"",
            "unit = \"MWh\"\ncalibration = { factor = 0.0 }",
            "plants[0].meters[2].calibration.factor",
            "non-zero",
        ),
        (
            "127.0.0.1:5020",
            "127.0.0.1",
            "plants[0].sources[0].endpoint",
            "host:port",
        ),
        (
            "opc.tcp://127.0.0.1:4840\"",
            "opc.tcp://127.0.0.1:4840\"\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"Sign\"",
            "plants[0].sources[1].certificate",
            "required with security_policy",
        ),
        (
            "opc.tcp://127.0.0.1:4840\"",
            "http://127.0.0.1:4840\"",
            "plants[0].sources[1].endpoint",
            "opc.tcp://",
        ),
    ];
    for (from, to, key, rule) in cases {
        assert!(
            GOOD.contains(from),
            "case edits {from:?}, which the good plant lacks"
        );
        let e = check(&GOOD.replacen(from, to, 1)).unwrap_err();
        assert_eq!(&e.key, key, "{to}: {e}");
        assert!(e.rule.contains(rule), "{to}: {e}");
    }
}

#[test]
fn node_ids_parse_in_every_form() {
    let cases = [
        ("i=2258", 0, Identifier::Numeric(2258)),
        (
            "ns=2;s=Boiler 1.Flow",
            2,
            Identifier::String("Boiler 1.Flow".into()),
        ),
        (
            "ns=1;g=09087E75-8E5E-499B-954F-F2A9603DB28A",
            1,
            Identifier::Guid("09087e75-8e5e-499b-954f-f2a9603db28a".into()),
        ),
        (
            "ns=3;b=M/RbKBsRVkePCePcx24oRA==",
            3,
            Identifier::Opaque("M/RbKBsRVkePCePcx24oRA==".into()),
        ),
    ];
    for (text, ns, id) in cases {
        let n = NodeId::parse(text).unwrap();
        assert_eq!((n.namespace, &n.identifier), (ns, &id), "{text}");
        assert_eq!(NodeId::parse(&n.to_string()).unwrap(), n);
    }
    for bad in [
        "",
        "s=",
        "ns=70000;i=1",
        "ns=1;i=-4",
        "g=1234",
        "ns=1",
        "x=1",
    ] {
        assert!(NodeId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn modbus_values_decode_in_both_word_orders() {
    let addr = |kind, word_order| ModbusAddress {
        unit: 1,
        table: RegisterTable::Holding,
        register: 0,
        kind,
        word_order,
        count: None,
        scale: 1.0,
        offset: 0.0,
    };
    // 1234.5 as f32 is 0x449A5000: ABCD = [0x449A, 0x5000], CDAB = [0x5000, 0x449A].
    let big = addr(RegisterType::F32, WordOrder::Big);
    assert_eq!(big.decode(&[0x449A, 0x5000]), Some(1234.5));
    let little = addr(RegisterType::F32, WordOrder::Little);
    assert_eq!(little.decode(&[0x5000, 0x449A]), Some(1234.5));
    assert_eq!(
        addr(RegisterType::I16, WordOrder::Big).decode(&[0xFFFE]),
        Some(-2.0)
    );
    assert_eq!(
        addr(RegisterType::U32, WordOrder::Big).decode(&[0x0001, 0x0000]),
        Some(65_536.0)
    );
    assert_eq!(
        addr(RegisterType::I32, WordOrder::Little).decode(&[0xFFFF, 0xFFFF]),
        Some(-1.0)
    );
    assert_eq!(big.decode(&[1]), None, "wrong register count");
    let mut scaled = addr(RegisterType::U16, WordOrder::Big);
    scaled.scale = 0.1;
    scaled.offset = -40.0;
    assert!((scaled.decode(&[1234]).unwrap() - 83.4).abs() < 1e-9);
    for a in [
        addr(RegisterType::F64, WordOrder::Little),
        addr(RegisterType::F32, WordOrder::Big),
        addr(RegisterType::I32, WordOrder::Little),
        scaled,
    ] {
        let regs = a.encode(83.4);
        assert_eq!(regs.len(), a.kind.width() as usize);
        let back = a.decode(&regs).unwrap();
        let tolerance = if a.kind == RegisterType::F64 {
            0.0
        } else {
            0.51 * a.scale.max(1e-5)
        };
        assert!((back - 83.4).abs() <= tolerance.max(1e-5), "{a:?}: {back}");
    }
}

#[test]
fn calibration_is_linear() {
    let mut f = check(GOOD).unwrap();
    let m = &mut f.meters[2];
    m.calibration = Calibration {
        factor: 1.02,
        offset: -0.5,
    };
    assert!((m.calibrate(100.0) - 101.5).abs() < 1e-12);
}
