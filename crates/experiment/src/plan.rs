//! Experiment plans: the TOML a user writes, and the matrix of [`Case`]s it expands to.
//!
//! The paper (Section V-C) studies one influencing parameter at a time while the others stay
//! at the testbed defaults (flavor Small, 10G NIC, no extra load), so a plan lists, for each
//! parameter, the values to try plus a default, and [`Plan::cases`] expands to: the baseline
//! (every default) and, for each non-default value of each parameter, one case that differs
//! from the baseline in that parameter only; all of it for every function × method.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A network function to migrate. `testsvc` is the lab's small stand-in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    Hss,
    Mme,
    Spgw,
    Testsvc,
}

impl Function {
    pub const ALL: [Function; 4] = [
        Function::Hss,
        Function::Mme,
        Function::Spgw,
        Function::Testsvc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Function::Hss => "hss",
            Function::Mme => "mme",
            Function::Spgw => "spgw",
            Function::Testsvc => "testsvc",
        }
    }

    /// The name the paper's tables use.
    pub fn label(self) -> &'static str {
        match self {
            Function::Hss => "HSS",
            Function::Mme => "MME",
            Function::Spgw => "SPGW",
            Function::Testsvc => "testsvc",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Function {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Function::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .with_context(|| format!("unknown function {s:?}; expected hss, mme, spgw or testsvc"))
    }
}

/// A migration method: the three container methods driven through CRIU and QEMU's pre-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    StopAndCopy,
    PreCopy,
    PostCopy,
    VmPreCopy,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::StopAndCopy,
        Method::PreCopy,
        Method::PostCopy,
        Method::VmPreCopy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::StopAndCopy => "stop-and-copy",
            Method::PreCopy => "pre-copy",
            Method::PostCopy => "post-copy",
            Method::VmPreCopy => "vm-pre-copy",
        }
    }

    /// The name the paper's tables use.
    pub fn label(self) -> &'static str {
        match self {
            Method::StopAndCopy => "Container StopandCopy",
            Method::PreCopy => "Container PreCopy",
            Method::PostCopy => "Container PostCopy",
            Method::VmPreCopy => "VM PreCopy",
        }
    }

    /// The phases the method's formula in the paper is made of, in the order they run
    /// (Eqs. 1, 2 and 4); the report lists these first and any other phase after them.
    pub fn paper_phases(self) -> &'static [&'static str] {
        match self {
            Method::StopAndCopy => &["Tc", "Tt", "Tn", "Tr"],
            Method::PreCopy => &["Tpd", "Tpdt", "Td", "Tdt", "Tn", "Tr"],
            Method::PostCopy => &["Tc", "Tt", "Tn", "Tr"],
            Method::VmPreCopy => &["Tpre", "Tl", "Tpost"],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL.into_iter().find(|m| m.as_str() == s).with_context(|| {
            format!("unknown method {s:?}; expected stop-and-copy, pre-copy, post-copy or vm-pre-copy")
        })
    }
}

/// Which host carries the extra CPU load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadWhere {
    Source,
    Destination,
    Both,
}

impl LoadWhere {
    pub const ALL: [LoadWhere; 3] = [LoadWhere::Source, LoadWhere::Destination, LoadWhere::Both];

    pub fn as_str(self) -> &'static str {
        match self {
            LoadWhere::Source => "source",
            LoadWhere::Destination => "destination",
            LoadWhere::Both => "both",
        }
    }
}

impl fmt::Display for LoadWhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadWhere {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        LoadWhere::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .with_context(|| {
                format!("unknown load place {s:?}; expected source, destination or both")
            })
    }
}

/// A link rate as `tc` writes it ("100mbit", "1gbit", "10gbit"), kept in bit/s so that
/// "1000mbit" and "1gbit" are the same case and sort by speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NicRate {
    pub bits_per_sec: u64,
}

impl NicRate {
    pub fn from_bits(bits_per_sec: u64) -> Self {
        NicRate { bits_per_sec }
    }
}

impl FromStr for NicRate {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let n: u64 = num.parse().with_context(|| {
            format!("NIC rate {s:?}: expected a whole number then a unit, e.g. 1gbit")
        })?;
        let mult: u64 = match unit {
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            "tbit" => 1_000_000_000_000,
            _ => bail!("NIC rate {s:?}: unit must be bit, kbit, mbit, gbit or tbit"),
        };
        let bits = n
            .checked_mul(mult)
            .with_context(|| format!("NIC rate {s:?} is too large"))?;
        if bits == 0 {
            bail!("NIC rate {s:?} must be above zero");
        }
        Ok(NicRate { bits_per_sec: bits })
    }
}

impl fmt::Display for NicRate {
    /// The largest unit that divides the rate exactly, so the text round-trips.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        for (mult, unit) in [
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if b >= mult && b % mult == 0 {
                return write!(f, "{}{unit}", b / mult);
            }
        }
        write!(f, "{b}bit")
    }
}

impl Serialize for NicRate {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NicRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// An extra CPU load put on one or both hosts during the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLoad {
    #[serde(rename = "where")]
    pub load_where: LoadWhere,
    /// Percent of every core of the loaded host(s); 0 means no extra load.
    pub percent: u8,
}

impl CpuLoad {
    pub const NONE: CpuLoad = CpuLoad {
        load_where: LoadWhere::Source,
        percent: 0,
    };
}

/// The values each influencing parameter takes in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Instance flavors by name (the executor maps a name to vCPUs/RAM/disk, cf. Table 4):
    /// Fig. 9(a).
    #[serde(default)]
    pub flavors: Vec<String>,
    /// Flavors with the default's vCPUs and other RAM sizes: Fig. 9(b).
    #[serde(default)]
    pub ram_flavors: Vec<String>,
    #[serde(default)]
    pub nic_rates: Vec<NicRate>,
    #[serde(default)]
    pub cpu_loads: Vec<CpuLoad>,
}

/// What every case uses unless it is the one varying that parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub flavor: String,
    pub nic_rate: NicRate,
    #[serde(default = "no_load")]
    pub cpu_load: CpuLoad,
}

fn no_load() -> CpuLoad {
    CpuLoad::NONE
}

fn default_runs() -> u32 {
    5
}

/// An experiment plan as written in TOML (see `plans/paper.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// Repetitions of every case (the paper did 5 per experiment).
    #[serde(default = "default_runs")]
    pub runs: u32,
    pub functions: Vec<Function>,
    pub methods: Vec<Method>,
    /// Functions whose parameter variations are run; the others only get the baseline.
    /// Absent means every function. The paper studies the influencing parameters on the
    /// SPGW alone (end of Section V-C), so `plans/paper.toml` sets `["spgw"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary_functions: Option<Vec<Function>>,
    #[serde(default = "empty_parameters")]
    pub parameters: Parameters,
    pub defaults: Defaults,
}

fn empty_parameters() -> Parameters {
    Parameters {
        flavors: vec![],
        ram_flavors: vec![],
        nic_rates: vec![],
        cpu_loads: vec![],
    }
}

/// One cell of the matrix: everything the executor needs to set up one migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Case {
    /// Stable across runs, plan edits and reorderings: built from the fields alone.
    pub id: String,
    pub function: Function,
    pub method: Method,
    pub flavor: String,
    pub nic_rate: NicRate,
    pub load_percent: u8,
    pub load_where: LoadWhere,
}

impl Case {
    pub fn new(
        function: Function,
        method: Method,
        flavor: &str,
        nic_rate: NicRate,
        load: CpuLoad,
    ) -> Case {
        // A case without load is the same experiment whatever `where` says, so the id (and
        // the stored field) is normalised to keep one id per experiment.
        let load_where = if load.percent == 0 {
            LoadWhere::Source
        } else {
            load.load_where
        };
        let load_part = if load.percent == 0 {
            "load-none".to_string()
        } else {
            format!("load-{}-{}", load_where, load.percent)
        };
        Case {
            id: format!("{function}.{method}.{flavor}.{nic_rate}.{load_part}"),
            function,
            method,
            flavor: flavor.to_string(),
            nic_rate,
            load_percent: load.percent,
            load_where,
        }
    }

    pub fn cpu_load(&self) -> CpuLoad {
        CpuLoad {
            load_where: self.load_where,
            percent: self.load_percent,
        }
    }
}

/// Which parameter a case moves away from the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Factor {
    Baseline,
    Flavor,
    NicRate,
    CpuLoad,
    /// More than one parameter differs (not produced by [`Plan::cases`]).
    Mixed,
}

impl Plan {
    pub fn from_toml_str(s: &str) -> Result<Plan> {
        let plan: Plan = toml::from_str(s).context("invalid plan")?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading plan {}", path.display()))?;
        Plan::from_toml_str(&text).with_context(|| format!("plan {}", path.display()))
    }

    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).context("serialising plan")
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            bail!("plan name is empty");
        }
        if self.runs == 0 {
            bail!("runs must be at least 1");
        }
        if self.functions.is_empty() {
            bail!("functions is empty");
        }
        if self.methods.is_empty() {
            bail!("methods is empty");
        }
        let p = &self.parameters;
        for f in std::iter::once(&self.defaults.flavor)
            .chain(&p.flavors)
            .chain(&p.ram_flavors)
        {
            // Flavor names end up in case ids, file names and CSV cells.
            if f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("flavor {f:?}: use letters, digits, '-' or '_'");
            }
        }
        if self.defaults.cpu_load.percent > 100 {
            bail!(
                "defaults.cpu_load.percent {} is above 100",
                self.defaults.cpu_load.percent
            );
        }
        for l in &self.parameters.cpu_loads {
            if l.percent == 0 || l.percent > 100 {
                bail!(
                    "cpu load {}% on {}: percent must be 1..=100",
                    l.percent,
                    l.load_where
                );
            }
        }
        if let Some(v) = &self.vary_functions {
            for f in v {
                if !self.functions.contains(f) {
                    bail!("vary_functions names {f}, which is not in functions");
                }
            }
        }
        Ok(())
    }

    fn baseline_for(&self, function: Function, method: Method) -> Case {
        Case::new(
            function,
            method,
            &self.defaults.flavor,
            self.defaults.nic_rate,
            self.defaults.cpu_load,
        )
    }

    /// Expands the matrix, in a fixed order (function, method, then baseline, flavors, NIC
    /// rates, loads), without duplicates: a listed value equal to the default is the baseline.
    pub fn cases(&self) -> Vec<Case> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let d = &self.defaults;
        for &function in &self.functions {
            let varies = self
                .vary_functions
                .as_ref()
                .map_or(true, |v| v.contains(&function));
            for &method in &self.methods {
                let mut cases = vec![self.baseline_for(function, method)];
                if varies {
                    let p = &self.parameters;
                    for fl in p.flavors.iter().chain(&p.ram_flavors) {
                        cases.push(Case::new(function, method, fl, d.nic_rate, d.cpu_load));
                    }
                    for &nic in &self.parameters.nic_rates {
                        cases.push(Case::new(function, method, &d.flavor, nic, d.cpu_load));
                    }
                    for &load in &self.parameters.cpu_loads {
                        cases.push(Case::new(function, method, &d.flavor, d.nic_rate, load));
                    }
                }
                for c in cases {
                    if seen.insert(c.id.clone()) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// Which parameter `case` varies relative to this plan's defaults.
    pub fn factor_of(&self, case: &Case) -> Factor {
        let d = &self.defaults;
        let base = Case::new(
            case.function,
            case.method,
            &d.flavor,
            d.nic_rate,
            d.cpu_load,
        );
        let diffs = [
            case.flavor != base.flavor,
            case.nic_rate != base.nic_rate,
            case.cpu_load() != base.cpu_load(),
        ];
        match diffs {
            [false, false, false] => Factor::Baseline,
            [true, false, false] => Factor::Flavor,
            [false, true, false] => Factor::NicRate,
            [false, false, true] => Factor::CpuLoad,
            _ => Factor::Mixed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_rate_round_trips() {
        for (s, b) in [
            ("100mbit", 100_000_000),
            ("1gbit", 1_000_000_000),
            ("10gbit", 10_000_000_000),
        ] {
            let r: NicRate = s.parse().unwrap();
            assert_eq!(r.bits_per_sec, b);
            assert_eq!(r.to_string(), s);
        }
        assert_eq!("1000mbit".parse::<NicRate>().unwrap().to_string(), "1gbit");
        assert_eq!(
            "1500kbit".parse::<NicRate>().unwrap().to_string(),
            "1500kbit"
        );
        for bad in [
            "",
            "gbit",
            "1",
            "1gbps",
            "0mbit",
            "-1gbit",
            "99999999999999tbit",
        ] {
            assert!(bad.parse::<NicRate>().is_err(), "{bad}");
        }
    }

    fn plan() -> Plan {
        Plan::from_toml_str(
            r#"
            name = "t"
            runs = 3
            functions = ["spgw", "mme"]
            methods = ["stop-and-copy", "pre-copy"]
            [parameters]
            flavors = ["small", "large"]
            nic_rates = ["100mbit", "1gbit"]
            cpu_loads = [{ where = "source", percent = 50 }, { where = "both", percent = 25 }]
            [defaults]
            flavor = "small"
            nic_rate = "1gbit"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn matrix_varies_one_parameter_at_a_time() {
        let p = plan();
        let cases = p.cases();
        // per function × method: baseline + large + 100mbit + 2 loads (small and 1gbit are
        // the defaults, so they are the baseline).
        assert_eq!(cases.len(), 2 * 2 * 5);
        let ids: BTreeSet<_> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), cases.len());
        assert!(ids.contains("spgw.stop-and-copy.small.1gbit.load-none"));
        assert!(ids.contains("mme.pre-copy.small.1gbit.load-both-25"));
        assert!(ids.contains("spgw.pre-copy.large.1gbit.load-none"));
        for c in &cases {
            assert_ne!(p.factor_of(c), Factor::Mixed, "{}", c.id);
        }
        let with_vary = Plan {
            vary_functions: Some(vec![Function::Spgw]),
            ..p
        };
        with_vary.validate().unwrap();
        assert_eq!(with_vary.cases().len(), 2 * 5 + 2);
    }

    #[test]
    fn bad_plans_are_rejected_with_a_reason() {
        let base = plan().to_toml_string().unwrap();
        assert_eq!(Plan::from_toml_str(&base).unwrap(), plan());
        let cases = [
            (base.replace("runs = 3", "runs = 0"), "runs"),
            (base.replace("\"spgw\"", "\"sgw\""), "unknown variant"),
            (base.replace("percent = 50", "percent = 150"), "percent"),
            (base.replace("\"large\"", "\"la rge\""), "flavor"),
            (format!("{base}\nbogus = 1\n"), "bogus"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", Plan::from_toml_str(&text).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
