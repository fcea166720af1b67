//! ISO-8601 periods as Key Vault's rotation policies use them (`P90D`, `P1Y`, `P3M`, `P2W`).
//! Key Vault takes whole years, months, weeks and days only.

use std::fmt;

use chrono::{DateTime, Days, Months, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Period {
    pub years: u32,
    pub months: u32,
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an ISO-8601 period of whole years, months, weeks and days (e.g. P90D, P1Y, P3M)"
)]
pub struct PeriodError(pub String);

impl Period {
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let err = || PeriodError(text.to_owned());
        let rest = text.strip_prefix('P').ok_or_else(err)?;
        if rest.is_empty() {
            return Err(err());
        }
        let mut period = Period::default();
        let mut number = String::new();
        // Designators must appear in this order, each at most once.
        let mut last_rank = 0;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let rank = match c {
                'Y' => 1,
                'M' => 2,
                'W' => 3,
                'D' => 4,
                _ => return Err(err()),
            };
            if number.is_empty() || rank <= last_rank || number.len() > 6 {
                return Err(err());
            }
            let value: u32 = number.parse().map_err(|_| err())?;
            number.clear();
            last_rank = rank;
            match c {
                'Y' => period.years = value,
                'M' => period.months = value,
                'W' => period.days += value * 7,
                _ => period.days += value,
            }
        }
        if !number.is_empty() {
            return Err(err());
        }
        Ok(period)
    }

    /// Length in days with Key Vault's conventions for comparisons (a month is 30 days, a year
    /// 365), used only to check the policy's minimums.
    pub fn approx_days(self) -> u64 {
        u64::from(self.years) * 365 + u64::from(self.months) * 30 + u64::from(self.days)
    }

    /// The calendar instant `self` after `start`.
    pub fn after(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        start
            .checked_add_months(Months::new(
                self.years.checked_mul(12)?.checked_add(self.months)?,
            ))?
            .checked_add_days(Days::new(u64::from(self.days)))
    }

    /// The calendar instant `self` before `end`.
    pub fn before(self, end: DateTime<Utc>) -> Option<DateTime<Utc>> {
        end.checked_sub_months(Months::new(
            self.years.checked_mul(12)?.checked_add(self.months)?,
        ))?
        .checked_sub_days(Days::new(u64::from(self.days)))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        if self.years > 0 {
            write!(f, "{}Y", self.years)?;
        }
        if self.months > 0 {
            write!(f, "{}M", self.months)?;
        }
        if self.days > 0 || (self.years == 0 && self.months == 0) {
            write!(f, "{}D", self.days)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_key_vault_periods() {
        assert_eq!(
            Period::parse("P90D").unwrap(),
            Period {
                years: 0,
                months: 0,
                days: 90
            }
        );
        assert_eq!(
            Period::parse("P1Y").unwrap(),
            Period {
                years: 1,
                months: 0,
                days: 0
            }
        );
        assert_eq!(
            Period::parse("P1Y2M3D").unwrap(),
            Period {
                years: 1,
                months: 2,
                days: 3
            }
        );
        assert_eq!(Period::parse("P2W").unwrap().days, 14);
        assert_eq!(Period::parse("P1W2D").unwrap().days, 9);
    }

    #[test]
    fn rejects_malformed_periods() {
        for bad in [
            "",
            "P",
            "90D",
            "P90",
            "PD",
            "P1D1Y",
            "P1Y1Y",
            "PT1H",
            "P-1D",
            "P1.5D",
            "p90d",
            "P9999999D",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn approximate_days_follow_key_vault() {
        assert_eq!(Period::parse("P1M").unwrap().approx_days(), 30);
        assert_eq!(Period::parse("P1Y").unwrap().approx_days(), 365);
        assert_eq!(Period::parse("P4W").unwrap().approx_days(), 28);
    }

    #[test]
    fn calendar_arithmetic() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let p = Period::parse("P1M").unwrap();
        assert_eq!(
            p.after(start).unwrap(),
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        let p = Period::parse("P30D").unwrap();
        assert_eq!(
            p.after(start).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
        );
        assert_eq!(p.before(p.after(start).unwrap()).unwrap(), start);
    }

    #[test]
    fn display_round_trips() {
        for text in ["P90D", "P1Y", "P1Y2M3D", "P0D"] {
            assert_eq!(Period::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Period::parse("P2W").unwrap().to_string(), "P14D");
    }
}
