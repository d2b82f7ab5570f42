//! A stand-in [`Executor`] that makes up plausible KPIs without a lab, for the tests of the
//! statistics and report engine and for trying a plan or a report layout. Its records say
//! `cpu_model = "synthetic (no lab)"`, so a report made from them cannot pass for a
//! measurement.
use crate::plan::{Case, Function, Method};
use crate::record::Record;
use crate::runner::Executor;
use anyhow::Result;

pub const SYNTHETIC_CPU: &str = "synthetic (no lab)";

/// Deterministic: the same (case, run) always gives the same record.
#[derive(Debug, Default, Clone)]
pub struct SyntheticExecutor {
    /// Runs carried out so far.
    pub calls: usize,
}

impl SyntheticExecutor {
    pub fn new() -> Self {
        Self::default()
    }
}

/// FNV-1a, to seed the noise from the case id and run.
fn seed(case: &Case, run: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in case.id.bytes().chain(run.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Noise(u64);

impl Noise {
    /// A factor in [1 − spread, 1 + spread] (xorshift64*).
    fn factor(&mut self, spread: f64) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + spread * (2.0 * u - 1.0)
    }
}

impl Executor for SyntheticExecutor {
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        self.calls += 1;
        let mut n = Noise(seed(case, run_index) | 1);
        let mut r = Record::new(case, run_index);
        // Checkpoint image sizes in the order of the paper's Table 11 (tens of MB for the
        // containers, the HSS the largest; GB for a VM).
        let image_mb = match case.function {
            Function::Hss => 180.0,
            Function::Mme => 40.0,
            Function::Spgw => 55.0,
            Function::Testsvc => 8.0,
        };
        let mbit_s = case.nic_rate.bits_per_sec as f64 / 1e6;
        let send_ms = |mb: f64| mb * 8.0 / mbit_s * 1000.0;
        // Load slows CPU-bound phases up to 50%, then saturates (paper Fig. 12).
        let load = 1.0 + (case.load_percent.min(50) as f64 / 100.0);
        let flavor = match case.flavor.as_str() {
            "medium" => 0.9,
            "large" => 0.85,
            _ => 1.0,
        };
        let cpu = |ms: f64, n: &mut Noise| ms * load * flavor * n.factor(0.08);
        let mut ph = |name: &str, v: f64| {
            r.phases.insert(name.to_string(), v);
            v
        };
        let (total, downtime, bytes) = match case.method {
            Method::StopAndCopy => {
                let tc = ph("Tc", cpu(image_mb * 6.0, &mut n));
                let tt = ph("Tt", send_ms(image_mb) * n.factor(0.05) + 15.0);
                let tn = ph("Tn", 25.0 * n.factor(0.2));
                let tr = ph("Tr", cpu(image_mb * 7.0, &mut n));
                let t = tc + tt + tn + tr;
                (t, t, image_mb * 1e6)
            }
            Method::PreCopy => {
                let tpd = ph("Tpd", cpu(image_mb * 5.0, &mut n));
                let tpdt = ph("Tpdt", send_ms(image_mb * 0.9) * n.factor(0.05) + 15.0);
                let td = ph("Td", cpu(image_mb * 1.2, &mut n));
                let tdt = ph("Tdt", send_ms(image_mb * 0.1) * n.factor(0.05) + 10.0);
                let tn = ph("Tn", 25.0 * n.factor(0.2));
                let tr = ph("Tr", cpu(image_mb * 4.0, &mut n));
                (
                    tpd + tpdt + td + tdt + tn + tr,
                    td + tdt + tn + tr,
                    image_mb * 1.1e6,
                )
            }
            Method::PostCopy => {
                let tc = ph("Tc", cpu(image_mb * 0.8, &mut n));
                let tt = ph("Tt", send_ms(image_mb * 0.05) * n.factor(0.05) + 10.0);
                let tn = ph("Tn", 25.0 * n.factor(0.2));
                let tr = ph("Tr", cpu(image_mb * 2.0, &mut n));
                let lazy = ph("Tlazy", send_ms(image_mb * 0.95) * n.factor(0.1));
                (tc + tt + tn + tr + lazy, tc + tt + tn + tr, image_mb * 1e6)
            }
            Method::VmPreCopy => {
                let vm_mb = 2400.0 + image_mb;
                let tpre = ph("Tpre", 1800.0 * n.factor(0.1));
                let tl = ph("Tl", send_ms(vm_mb) * n.factor(0.1) + 2500.0);
                let tpost = ph("Tpost", 4000.0 * n.factor(0.05));
                (tpre + tl + tpost, 900.0 * n.factor(0.3), vm_mb * 1e6)
            }
        };
        r.total_ms = total;
        r.downtime_ms = downtime;
        r.image_bytes = bytes as u64;
        if case.method == Method::PreCopy {
            // The pre-dump carries nine tenths of the images, the dump the rest.
            let pre = (bytes * 0.9) as u64;
            r.round_bytes = Some(vec![pre, r.image_bytes - pre]);
        }
        r.icmp_downtime_ms = Some(downtime + 40.0 * n.factor(0.5));
        r.app_downtime_ms = Some(downtime + 60.0 * n.factor(0.5));
        // The UE probes have a 100 ms resolution, like the paper's.
        let ue =
            |extra: f64, n: &mut Noise| ((downtime + extra * n.factor(0.5)) / 100.0).ceil() * 100.0;
        match case.function {
            Function::Spgw => {
                r.dp_gtp_ms = Some(ue(150.0, &mut n));
                r.dp_sgi_ms = Some(ue(200.0, &mut n));
            }
            Function::Mme => r.cp_s1mme_ms = Some(ue(300.0, &mut n)),
            _ => {}
        }
        r.cpu_model = SYNTHETIC_CPU.to_string();
        Ok(r)
    }

    fn cpu_model(&self) -> String {
        SYNTHETIC_CPU.to_string()
    }
}
