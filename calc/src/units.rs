//! Unit conversions: the one place a conversion factor is written down.
//!
//! Every factor is an exact definition held as a `const`, so a figure like 1 GJ = 277.777... kWh
//! is computed from 1e9 / 3.6e6 rather than typed in rounded. Linear quantities (energy, power,
//! pressure) convert through their SI unit; temperature is affine and has its own functions.
//! Fuel quantities convert to energy only through a [`CalorificValue`] that names its basis
//! (gross/HHV or net/LHV), because mixing the two is the most common error in this field.
//!
//! Unit names parse case-insensitively: no milli-prefixed unit is supported, so `mw` cannot be
//! mistaken for milliwatts. `MBtu` is refused on purpose: in US practice it means 1000 Btu,
//! elsewhere 10^6 Btu.

use super::{CalcError, non_negative};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Energy, joules per unit
// ---------------------------------------------------------------------------------------------

/// Joules in one kilojoule (SI prefix).
pub const J_PER_KJ: f64 = 1e3;
/// Joules in one megajoule (SI prefix).
pub const J_PER_MJ: f64 = 1e6;
/// Joules in one gigajoule (SI prefix).
pub const J_PER_GJ: f64 = 1e9;
/// Joules in one kilowatt-hour: 1000 W x 3600 s, exact.
pub const J_PER_KWH: f64 = 3.6e6;
/// Joules in one megawatt-hour: 1000 kWh, exact.
pub const J_PER_MWH: f64 = 3.6e9;
/// Joules in one International Table Btu, exact by definition (NIST SP 811, B.9):
/// 1 Btu(IT) = 1055.05585262 J.
pub const J_PER_BTU_IT: f64 = 1_055.055_852_62;
/// Joules in one MMBtu = 10^6 Btu(IT), exact (the US gas-trade unit).
pub const J_PER_MMBTU: f64 = 1.055_055_852_62e9;
/// Joules in one therm = 10^5 Btu(IT), exact: the EC therm (Directive 80/181/EEC) and the
/// reference's 29.30710702 kWh. The US therm of NIST SP 811 (105.4804 MJ) is 0.02 % smaller.
pub const J_PER_THERM: f64 = 1.055_055_852_62e8;
/// Joules in one International Table kilocalorie, exact by definition: 4.1868 kJ.
pub const J_PER_KCAL_IT: f64 = 4_186.8;
/// Joules in one tonne of oil equivalent: 10^7 kcal(IT) = 41.868 GJ, exact by convention
/// (IEA/OECD/Eurostat Energy Statistics Manual, 2005, annex 3).
pub const J_PER_TOE: f64 = 4.1868e10;

// ---------------------------------------------------------------------------------------------
// Power, watts per unit
// ---------------------------------------------------------------------------------------------

/// Watts in one kilowatt (SI prefix).
pub const W_PER_KW: f64 = 1e3;
/// Watts in one megawatt (SI prefix).
pub const W_PER_MW: f64 = 1e6;
/// Watts in one Btu(IT) per hour: 1055.05585262 J / 3600 s.
pub const W_PER_BTU_IT_PER_H: f64 = J_PER_BTU_IT / 3_600.0;
/// Watts in one kcal(IT) per hour: 4186.8 J / 3600 s = 1.163 W exactly.
pub const W_PER_KCAL_IT_PER_H: f64 = J_PER_KCAL_IT / 3_600.0;

// ---------------------------------------------------------------------------------------------
// Temperature
// ---------------------------------------------------------------------------------------------

/// Kelvin at 0 degC, exact (SI definition of the Celsius scale).
pub const ZERO_CELSIUS_K: f64 = 273.15;
/// Absolute zero on the Fahrenheit scale, exact: -459.67 degF = 0 K.
pub const ABSOLUTE_ZERO_F: f64 = -459.67;
/// degF at 0 degC, exact.
pub const ZERO_CELSIUS_F: f64 = 32.0;
/// Kelvin (or degC) per degF of temperature difference, exact: 5/9.
pub const K_PER_F_DEGREE: f64 = 5.0 / 9.0;

// ---------------------------------------------------------------------------------------------
// Pressure, pascals per unit
// ---------------------------------------------------------------------------------------------

/// Pascals in one kilopascal (SI prefix).
pub const PA_PER_KPA: f64 = 1e3;
/// Pascals in one megapascal (SI prefix).
pub const PA_PER_MPA: f64 = 1e6;
/// Pascals in one bar, exact by definition.
pub const PA_PER_BAR: f64 = 1e5;
/// Pascals in one psi, as the project reference states it (6894.757 Pa). The exact value from
/// the pound-force and inch definitions is 6894.757293168 Pa; the difference is 4e-8 relative.
pub const PA_PER_PSI: f64 = 6_894.757;
/// Pascals in one standard atmosphere, exact by definition.
pub const PA_PER_ATM: f64 = 101_325.0;

// ---------------------------------------------------------------------------------------------
// Unit traits and parsing
// ---------------------------------------------------------------------------------------------

/// A named unit of one quantity, parseable from the spellings operators use.
pub trait Unit: Copy + PartialEq + 'static {
    /// The quantity, as error messages name it (`energy`, `power`).
    const QUANTITY: &'static str;
    /// Every unit of the quantity, in the order error messages list them.
    const ALL: &'static [Self];
    /// The canonical symbol, e.g. `kWh`.
    fn symbol(self) -> &'static str;
    /// Further accepted spellings besides the symbol (matched case-insensitively).
    fn aliases(self) -> &'static [&'static str];
}

/// A unit that converts to its quantity's SI unit by a constant factor.
pub trait LinearUnit: Unit {
    /// How many SI units (J, W, Pa) one of this unit is.
    fn si_per_unit(self) -> f64;
}

/// Parses a unit name; an unknown name is refused with the field, the name and every known
/// symbol, so the operator can fix the request without reading the source.
pub fn parse_unit<U: Unit>(field: &str, name: &str) -> Result<U, CalcError> {
    let wanted = name.trim();
    U::ALL
        .iter()
        .copied()
        .find(|u| {
            u.symbol().eq_ignore_ascii_case(wanted)
                || u.aliases().iter().any(|a| a.eq_ignore_ascii_case(wanted))
        })
        .ok_or_else(|| {
            let known: Vec<&str> = U::ALL.iter().map(|u| u.symbol()).collect();
            CalcError::invalid(
                field,
                format!(
                    "unknown {} unit \"{name}\"; known: {}",
                    U::QUANTITY,
                    known.join(", ")
                ),
            )
        })
}

/// Converts `value` between two units of the same linear quantity. Pure arithmetic: NaN in
/// gives NaN out, so callers validate their inputs first.
pub fn convert<U: LinearUnit>(value: f64, from: U, to: U) -> f64 {
    if from == to {
        return value;
    }
    value * from.si_per_unit() / to.si_per_unit()
}

macro_rules! unit_enum {
    (
        $(#[$doc:meta])*
        $name:ident, $quantity:literal {
            $( $(#[$vdoc:meta])* $variant:ident => $symbol:literal, [$($alias:literal),*] ),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant ),+
        }

        impl Unit for $name {
            const QUANTITY: &'static str = $quantity;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn symbol(self) -> &'static str {
                match self { $($name::$variant => $symbol),+ }
            }
            fn aliases(self) -> &'static [&'static str] {
                match self { $($name::$variant => &[$($alias),*]),+ }
            }
        }

        impl FromStr for $name {
            type Err = CalcError;
            /// Parses a unit name; the error's field is `unit`.
            fn from_str(s: &str) -> Result<Self, CalcError> {
                parse_unit("unit", s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.symbol())
            }
        }
    };
}

unit_enum! {
    /// Units of energy.
    EnergyUnit, "energy" {
        /// Joule, the SI unit.
        Joule => "J", ["joule"],
        /// Kilojoule.
        Kilojoule => "kJ", [],
        /// Megajoule.
        Megajoule => "MJ", [],
        /// Gigajoule.
        Gigajoule => "GJ", [],
        /// Kilowatt-hour.
        KilowattHour => "kWh", [],
        /// Megawatt-hour.
        MegawattHour => "MWh", [],
        /// International Table Btu.
        Btu => "Btu", ["Btu_IT"],
        /// 10^6 Btu(IT).
        MmBtu => "MMBtu", [],
        /// 10^5 Btu(IT) (EC therm).
        Therm => "therm", ["thm"],
        /// International Table kilocalorie.
        Kilocalorie => "kcal", ["kcal_IT"],
        /// Tonne of oil equivalent (IEA convention).
        Toe => "toe", [],
    }
}

impl LinearUnit for EnergyUnit {
    fn si_per_unit(self) -> f64 {
        match self {
            EnergyUnit::Joule => 1.0,
            EnergyUnit::Kilojoule => J_PER_KJ,
            EnergyUnit::Megajoule => J_PER_MJ,
            EnergyUnit::Gigajoule => J_PER_GJ,
            EnergyUnit::KilowattHour => J_PER_KWH,
            EnergyUnit::MegawattHour => J_PER_MWH,
            EnergyUnit::Btu => J_PER_BTU_IT,
            EnergyUnit::MmBtu => J_PER_MMBTU,
            EnergyUnit::Therm => J_PER_THERM,
            EnergyUnit::Kilocalorie => J_PER_KCAL_IT,
            EnergyUnit::Toe => J_PER_TOE,
        }
    }
}

unit_enum! {
    /// Units of power (heat rate).
    PowerUnit, "power" {
        /// Watt, the SI unit.
        Watt => "W", ["watt"],
        /// Kilowatt.
        Kilowatt => "kW", [],
        /// Megawatt.
        Megawatt => "MW", [],
        /// Btu(IT) per hour.
        BtuPerHour => "Btu/h", ["Btu/hr", "Btuh"],
        /// kcal(IT) per hour.
        KilocaloriePerHour => "kcal/h", ["kcal/hr"],
    }
}

impl LinearUnit for PowerUnit {
    fn si_per_unit(self) -> f64 {
        match self {
            PowerUnit::Watt => 1.0,
            PowerUnit::Kilowatt => W_PER_KW,
            PowerUnit::Megawatt => W_PER_MW,
            PowerUnit::BtuPerHour => W_PER_BTU_IT_PER_H,
            PowerUnit::KilocaloriePerHour => W_PER_KCAL_IT_PER_H,
        }
    }
}

unit_enum! {
    /// Units of pressure. Absolute and gauge are not distinguished: a conversion is valid for
    /// either as long as both sides use the same reference.
    PressureUnit, "pressure" {
        /// Pascal, the SI unit.
        Pascal => "Pa", ["pascal"],
        /// Kilopascal.
        Kilopascal => "kPa", [],
        /// Megapascal.
        Megapascal => "MPa", [],
        /// Bar.
        Bar => "bar", [],
        /// Pound-force per square inch.
        Psi => "psi", [],
        /// Standard atmosphere.
        Atmosphere => "atm", [],
    }
}

impl LinearUnit for PressureUnit {
    fn si_per_unit(self) -> f64 {
        match self {
            PressureUnit::Pascal => 1.0,
            PressureUnit::Kilopascal => PA_PER_KPA,
            PressureUnit::Megapascal => PA_PER_MPA,
            PressureUnit::Bar => PA_PER_BAR,
            PressureUnit::Psi => PA_PER_PSI,
            PressureUnit::Atmosphere => PA_PER_ATM,
        }
    }
}

unit_enum! {
    /// Temperature scales. Affine, not linear: use [`convert_temperature`] for readings and
    /// [`convert_temperature_difference`] for differences.
    TemperatureUnit, "temperature" {
        /// Kelvin.
        Kelvin => "K", ["kelvin"],
        /// Degree Celsius.
        Celsius => "C", ["degC", "°C", "celsius"],
        /// Degree Fahrenheit.
        Fahrenheit => "F", ["degF", "°F", "fahrenheit"],
    }
}

/// Converts a temperature reading. Each pair uses its direct formula, so degC <-> degF does
/// not pick up the rounding of 273.15.
pub fn convert_temperature(value: f64, from: TemperatureUnit, to: TemperatureUnit) -> f64 {
    use TemperatureUnit::{Celsius as C, Fahrenheit as F, Kelvin as K};
    match (from, to) {
        (K, K) | (C, C) | (F, F) => value,
        (C, K) => value + ZERO_CELSIUS_K,
        (K, C) => value - ZERO_CELSIUS_K,
        (C, F) => value / K_PER_F_DEGREE + ZERO_CELSIUS_F,
        (F, C) => (value - ZERO_CELSIUS_F) * K_PER_F_DEGREE,
        (K, F) => value / K_PER_F_DEGREE + ABSOLUTE_ZERO_F,
        (F, K) => (value - ABSOLUTE_ZERO_F) * K_PER_F_DEGREE,
    }
}

/// Converts a temperature difference: 1 K = 1 degC = 1.8 degF, no offset.
pub fn convert_temperature_difference(
    value: f64,
    from: TemperatureUnit,
    to: TemperatureUnit,
) -> f64 {
    let per_k = |u: TemperatureUnit| match u {
        TemperatureUnit::Kelvin | TemperatureUnit::Celsius => 1.0,
        TemperatureUnit::Fahrenheit => K_PER_F_DEGREE,
    };
    if per_k(from) == per_k(to) {
        value
    } else {
        value * per_k(from) / per_k(to)
    }
}

/// degC to K.
pub fn celsius_to_kelvin(c: f64) -> f64 {
    convert_temperature(c, TemperatureUnit::Celsius, TemperatureUnit::Kelvin)
}

/// K to degC.
pub fn kelvin_to_celsius(k: f64) -> f64 {
    convert_temperature(k, TemperatureUnit::Kelvin, TemperatureUnit::Celsius)
}

/// Checks that a degC reading is finite and above absolute zero; the error names `field`.
pub fn celsius_reading(field: &str, c: f64) -> Result<f64, CalcError> {
    super::finite(field, c)?;
    if c <= -ZERO_CELSIUS_K {
        return Err(CalcError::invalid(
            field,
            format!("must be above absolute zero (-273.15 C), got {c}"),
        ));
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Fuel quantity to energy
// ---------------------------------------------------------------------------------------------

unit_enum! {
    /// The unit a fuel is metered in. A cubic metre is at the reference conditions of the
    /// calorific value it is used with; no pressure or temperature correction is applied.
    FuelUnit, "fuel quantity" {
        /// Cubic metre (gas).
        CubicMetre => "m3", ["m³"],
        /// Litre (liquid fuel).
        Litre => "L", ["litre", "liter"],
        /// Kilogram.
        Kilogram => "kg", [],
        /// Tonne (1000 kg).
        Tonne => "t", ["tonne"],
    }
}

impl Serialize for FuelUnit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.symbol())
    }
}

impl<'de> Deserialize<'de> for FuelUnit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_unit("unit", &s).map_err(serde::de::Error::custom)
    }
}

/// The basis of a heating value: gross (HHV/GCV, water in the flue gas condensed) or net
/// (LHV/NCV, water left as vapour). Serialized as `"gross"` / `"net"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// Gross / higher heating value.
    Gross,
    /// Net / lower heating value.
    Net,
}

impl Basis {
    /// The name used in JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Gross => "gross",
            Basis::Net => "net",
        }
    }

    /// Parses `gross`/`hhv`/`gcv` or `net`/`lhv`/`ncv` (any case); the error names `field`.
    pub fn parse_field(field: &str, name: &str) -> Result<Basis, CalcError> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "gross" | "hhv" | "gcv" => Ok(Basis::Gross),
            "net" | "lhv" | "ncv" => Ok(Basis::Net),
            _ => Err(CalcError::invalid(
                field,
                format!("unknown heating-value basis \"{name}\"; known: gross, net"),
            )),
        }
    }
}

/// Converts energy between heating-value bases. The gross/net ratio depends on the fuel's
/// hydrogen and moisture content, so it must be given; `None` across bases is an error.
pub fn convert_basis(
    energy_kwh: f64,
    from: Basis,
    to: Basis,
    gross_over_net: Option<f64>,
) -> Result<f64, CalcError> {
    if from == to {
        return Ok(energy_kwh);
    }
    let ratio = gross_net_ratio(from, to, gross_over_net)?;
    Ok(match to {
        Basis::Gross => energy_kwh * ratio,
        Basis::Net => energy_kwh / ratio,
    })
}

fn gross_net_ratio(from: Basis, to: Basis, ratio: Option<f64>) -> Result<f64, CalcError> {
    let field = "gross_over_net";
    let r = ratio.ok_or_else(|| {
        CalcError::invalid(
            field,
            format!(
                "converting from {} to {} basis needs the fuel's gross/net calorific value ratio",
                from.name(),
                to.name()
            ),
        )
    })?;
    super::finite(field, r)?;
    // Gross includes the latent heat of the water formed, so it is never below net.
    if r < 1.0 {
        return Err(CalcError::invalid(
            field,
            format!("gross/net ratio must be >= 1, got {r}"),
        ));
    }
    Ok(r)
}

/// A fuel's calorific value: energy per metered unit, on a named basis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalorificValue {
    /// kWh per `unit` of fuel. Must be finite and > 0.
    pub value_kwh_per_unit: f64,
    /// The metered unit the value is per.
    pub unit: FuelUnit,
    /// Gross or net.
    pub basis: Basis,
}

/// Seed default for natural gas: 10.55 kWh/m3, gross. Configurable per fuel; this is the figure
/// the predecessor system shipped with, not a property of every gas.
pub const NATURAL_GAS_SEED: CalorificValue = CalorificValue {
    value_kwh_per_unit: 10.55,
    unit: FuelUnit::CubicMetre,
    basis: Basis::Gross,
};

/// Seed default for gas oil: 9.96 kWh/L, net. Configurable per fuel, like the gas figure.
pub const GAS_OIL_SEED: CalorificValue = CalorificValue {
    value_kwh_per_unit: 9.96,
    unit: FuelUnit::Litre,
    basis: Basis::Net,
};

impl CalorificValue {
    /// Checks the value is finite and > 0; the error names `field.value_kwh_per_unit`.
    pub fn validate(&self, field: &str) -> Result<(), CalcError> {
        super::positive(
            &format!("{field}.value_kwh_per_unit"),
            self.value_kwh_per_unit,
        )
        .map(|_| ())
    }

    /// Energy in `quantity` units of fuel, kWh on this value's own basis.
    pub fn energy_kwh(&self, quantity: f64) -> Result<f64, CalcError> {
        self.validate("calorific_value")?;
        Ok(non_negative("quantity", quantity)? * self.value_kwh_per_unit)
    }

    /// Energy in `quantity` units of fuel on the requested basis; crossing bases needs the
    /// fuel's gross/net ratio.
    pub fn energy_kwh_on(
        &self,
        quantity: f64,
        basis: Basis,
        gross_over_net: Option<f64>,
    ) -> Result<f64, CalcError> {
        convert_basis(
            self.energy_kwh(quantity)?,
            self.basis,
            basis,
            gross_over_net,
        )
    }

    /// Fuel quantity (in `unit`) that holds `energy_kwh` on this value's basis.
    pub fn quantity_for_kwh(&self, energy_kwh: f64) -> Result<f64, CalcError> {
        self.validate("calorific_value")?;
        Ok(non_negative("energy_kwh", energy_kwh)? / self.value_kwh_per_unit)
    }

    /// The same fuel's calorific value on another basis; crossing bases needs the ratio.
    pub fn to_basis(
        &self,
        basis: Basis,
        gross_over_net: Option<f64>,
    ) -> Result<CalorificValue, CalcError> {
        self.validate("calorific_value")?;
        Ok(CalorificValue {
            value_kwh_per_unit: convert_basis(
                self.value_kwh_per_unit,
                self.basis,
                basis,
                gross_over_net,
            )?,
            unit: self.unit,
            basis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn gigajoule_is_computed_not_rounded() {
        let kwh = convert(1.0, EnergyUnit::Gigajoule, EnergyUnit::KilowattHour);
        assert_eq!(kwh, 1e9 / 3.6e6);
        assert_ne!(kwh, 277.778);
        assert_eq!(
            convert(1.0, EnergyUnit::KilowattHour, EnergyUnit::Megajoule),
            3.6
        );
        assert_eq!(
            convert(1.0, EnergyUnit::MegawattHour, EnergyUnit::KilowattHour),
            1000.0
        );
    }

    #[test]
    fn btu_family_matches_reference() {
        // Reference figures are given to 10 significant digits; compare at half the last digit.
        let btu = convert(1.0, EnergyUnit::Btu, EnergyUnit::KilowattHour);
        assert!(close(btu, 2.930710702e-4, 5e-14), "{btu}");
        let mmbtu = convert(1.0, EnergyUnit::MmBtu, EnergyUnit::KilowattHour);
        assert!(close(mmbtu, 293.0710702, 5e-8), "{mmbtu}");
        let therm = convert(1.0, EnergyUnit::Therm, EnergyUnit::KilowattHour);
        assert!(close(therm, 29.30710702, 5e-9), "{therm}");
        assert_eq!(
            convert(1.0, EnergyUnit::Btu, EnergyUnit::Joule),
            J_PER_BTU_IT
        );
        let mm = convert(1e6, EnergyUnit::Btu, EnergyUnit::MmBtu);
        assert!(close(mm, 1.0, 1e-15), "{mm}");
    }

    #[test]
    fn kcal_toe_and_power() {
        assert_eq!(
            convert(1.0, EnergyUnit::Kilocalorie, EnergyUnit::Kilojoule),
            4.1868
        );
        assert_eq!(convert(1.0, EnergyUnit::Toe, EnergyUnit::Gigajoule), 41.868);
        assert!(close(
            convert(1.0, PowerUnit::KilocaloriePerHour, PowerUnit::Watt),
            1.163,
            1e-15
        ));
        assert!(close(
            convert(1.0, PowerUnit::BtuPerHour, PowerUnit::Watt),
            0.29307107017222,
            1e-14
        ));
        assert_eq!(
            convert(2.5, PowerUnit::Megawatt, PowerUnit::Kilowatt),
            2500.0
        );
    }

    #[test]
    fn pressure() {
        assert_eq!(convert(1.0, PressureUnit::Bar, PressureUnit::Pascal), 1e5);
        assert_eq!(
            convert(1.0, PressureUnit::Psi, PressureUnit::Pascal),
            6894.757
        );
        assert_eq!(
            convert(1.0, PressureUnit::Atmosphere, PressureUnit::Kilopascal),
            101.325
        );
        assert!(close(
            convert(1.0, PressureUnit::Atmosphere, PressureUnit::Bar),
            1.01325,
            1e-15
        ));
    }

    #[test]
    fn temperature_fixed_points() {
        use TemperatureUnit::*;
        assert_eq!(convert_temperature(0.0, Celsius, Kelvin), 273.15);
        assert_eq!(convert_temperature(100.0, Celsius, Fahrenheit), 212.0);
        assert_eq!(convert_temperature(-40.0, Fahrenheit, Celsius), -40.0);
        assert_eq!(convert_temperature(0.0, Kelvin, Fahrenheit), -459.67);
        assert!(close(
            convert_temperature(32.0, Fahrenheit, Kelvin),
            273.15,
            1e-12
        ));
        assert!(close(
            convert_temperature(373.15, Kelvin, Celsius),
            100.0,
            1e-12
        ));
        assert_eq!(convert_temperature_difference(10.0, Celsius, Kelvin), 10.0);
        assert!(close(
            convert_temperature_difference(10.0, Kelvin, Fahrenheit),
            18.0,
            1e-12
        ));
        for x in [-273.15, -40.0, 0.0, 25.0, 100.0, 1500.0] {
            for a in TemperatureUnit::ALL {
                for b in TemperatureUnit::ALL {
                    let back = convert_temperature(convert_temperature(x, *a, *b), *b, *a);
                    assert!(close(back, x, 1e-9), "{x} {a}->{b}->{a} = {back}");
                }
            }
        }
    }

    #[test]
    fn celsius_reading_rejects_below_absolute_zero() {
        assert!(celsius_reading("t_c", -273.0).is_ok());
        assert_eq!(
            celsius_reading("t_c", -273.15).unwrap_err().field(),
            Some("t_c")
        );
        assert_eq!(
            celsius_reading("t_c", f64::NAN).unwrap_err().field(),
            Some("t_c")
        );
    }

    #[test]
    fn natural_gas_seed_check() {
        assert_eq!(NATURAL_GAS_SEED.energy_kwh(1000.0).unwrap(), 10550.0);
        assert_eq!(NATURAL_GAS_SEED.basis, Basis::Gross);
        assert!(close(GAS_OIL_SEED.energy_kwh(100.0).unwrap(), 996.0, 1e-12));
        assert_eq!(GAS_OIL_SEED.basis, Basis::Net);
        assert!(close(
            NATURAL_GAS_SEED.quantity_for_kwh(10550.0).unwrap(),
            1000.0,
            1e-9
        ));
        assert_eq!(
            NATURAL_GAS_SEED.energy_kwh(-1.0).unwrap_err().field(),
            Some("quantity")
        );
    }

    #[test]
    fn crossing_bases_needs_a_ratio() {
        let err = NATURAL_GAS_SEED.to_basis(Basis::Net, None).unwrap_err();
        assert_eq!(err.field(), Some("gross_over_net"));
        assert!(err.to_string().contains("gross to net"), "{err}");
        assert_eq!(
            NATURAL_GAS_SEED
                .to_basis(Basis::Net, Some(0.9))
                .unwrap_err()
                .field(),
            Some("gross_over_net")
        );
        // Same basis never needs one.
        assert_eq!(
            NATURAL_GAS_SEED.to_basis(Basis::Gross, None).unwrap(),
            NATURAL_GAS_SEED
        );
        let net = NATURAL_GAS_SEED.to_basis(Basis::Net, Some(1.1)).unwrap();
        assert!(close(net.value_kwh_per_unit, 10.55 / 1.1, 1e-12));
        assert_eq!(net.basis, Basis::Net);
        let gross = GAS_OIL_SEED
            .energy_kwh_on(1.0, Basis::Gross, Some(1.06))
            .unwrap();
        assert!(close(gross, 9.96 * 1.06, 1e-12));
        assert!(convert_basis(1.0, Basis::Net, Basis::Gross, None).is_err());
    }

    #[test]
    fn calorific_value_json_is_flat_strings() {
        let v = serde_json::to_value(NATURAL_GAS_SEED).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"value_kwh_per_unit": 10.55, "unit": "m3", "basis": "gross"})
        );
        let back: CalorificValue =
            serde_json::from_str(r#"{"value_kwh_per_unit":9.96,"unit":"L","basis":"net"}"#)
                .unwrap();
        assert_eq!(back, GAS_OIL_SEED);
        assert!(
            serde_json::from_str::<CalorificValue>(
                r#"{"value_kwh_per_unit":1,"unit":"gallon","basis":"net"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn parsing_names_the_unit_and_lists_known_ones() {
        assert_eq!(
            "kWh".parse::<EnergyUnit>().unwrap(),
            EnergyUnit::KilowattHour
        );
        assert_eq!("MMBtu".parse::<EnergyUnit>().unwrap(), EnergyUnit::MmBtu);
        assert_eq!("mmbtu".parse::<EnergyUnit>().unwrap(), EnergyUnit::MmBtu);
        assert_eq!("therm".parse::<EnergyUnit>().unwrap(), EnergyUnit::Therm);
        assert_eq!(" GJ ".parse::<EnergyUnit>().unwrap(), EnergyUnit::Gigajoule);
        assert_eq!(
            "Btu/hr".parse::<PowerUnit>().unwrap(),
            PowerUnit::BtuPerHour
        );
        assert_eq!(
            "°C".parse::<TemperatureUnit>().unwrap(),
            TemperatureUnit::Celsius
        );
        assert_eq!("psi".parse::<PressureUnit>().unwrap(), PressureUnit::Psi);
        assert_eq!("m3".parse::<FuelUnit>().unwrap(), FuelUnit::CubicMetre);
        let err = "MBtu".parse::<EnergyUnit>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("unit: unknown energy unit \"MBtu\""),
            "{msg}"
        );
        for u in EnergyUnit::ALL {
            assert!(msg.contains(u.symbol()), "{msg} lacks {u}");
        }
        let err = parse_unit::<PowerUnit>("meters[0].unit", "hp").unwrap_err();
        assert_eq!(err.field(), Some("meters[0].unit"));
        assert_eq!(Basis::parse_field("b", "HHV").unwrap(), Basis::Gross);
        assert_eq!(Basis::parse_field("b", "lhv").unwrap(), Basis::Net);
        assert_eq!(
            Basis::parse_field("b", "wet").unwrap_err().field(),
            Some("b")
        );
    }

    #[test]
    fn every_symbol_and_alias_parses_to_its_own_unit() {
        fn check<U: Unit + std::fmt::Debug>() {
            for u in U::ALL {
                assert_eq!(parse_unit::<U>("u", u.symbol()).unwrap(), *u);
                for a in u.aliases() {
                    assert_eq!(parse_unit::<U>("u", a).unwrap(), *u, "{a}");
                }
            }
        }
        check::<EnergyUnit>();
        check::<PowerUnit>();
        check::<PressureUnit>();
        check::<TemperatureUnit>();
        check::<FuelUnit>();
    }

    fn round_trip<U: LinearUnit + std::fmt::Debug>(x: f64, i: usize, j: usize) {
        let (a, b) = (U::ALL[i % U::ALL.len()], U::ALL[j % U::ALL.len()]);
        let back = convert(convert(x, a, b), b, a);
        assert!(
            (back - x).abs() <= 1e-14 * x.abs(),
            "{x} {a:?}->{b:?}->{a:?} = {back}"
        );
    }

    proptest! {
        #[test]
        fn energy_round_trips(x in -1e12f64..1e12, i in 0usize..64, j in 0usize..64) {
            round_trip::<EnergyUnit>(x, i, j);
        }

        #[test]
        fn power_round_trips(x in -1e12f64..1e12, i in 0usize..64, j in 0usize..64) {
            round_trip::<PowerUnit>(x, i, j);
        }

        #[test]
        fn pressure_round_trips(x in -1e12f64..1e12, i in 0usize..64, j in 0usize..64) {
            round_trip::<PressureUnit>(x, i, j);
        }

        #[test]
        fn temperature_round_trips(x in -273.15f64..1e5, i in 0usize..3, j in 0usize..3) {
            let (a, b) = (TemperatureUnit::ALL[i], TemperatureUnit::ALL[j]);
            let back = convert_temperature(convert_temperature(x, a, b), b, a);
            prop_assert!((back - x).abs() <= 1e-9 + 1e-14 * x.abs(), "{x} {a}->{b} {back}");
            let d = convert_temperature_difference(
                convert_temperature_difference(x, a, b), b, a);
            prop_assert!((d - x).abs() <= 1e-14 * x.abs());
        }

        #[test]
        fn basis_round_trips(x in 0f64..1e12, r in 1f64..1.3) {
            let net = convert_basis(x, Basis::Gross, Basis::Net, Some(r)).unwrap();
            let back = convert_basis(net, Basis::Net, Basis::Gross, Some(r)).unwrap();
            prop_assert!((back - x).abs() <= 1e-14 * x);
        }

        #[test]
        fn fuel_quantity_round_trips(q in 0f64..1e9) {
            for cv in [NATURAL_GAS_SEED, GAS_OIL_SEED] {
                let back = cv.quantity_for_kwh(cv.energy_kwh(q).unwrap()).unwrap();
                prop_assert!((back - q).abs() <= 1e-14 * q);
            }
        }
    }
}
