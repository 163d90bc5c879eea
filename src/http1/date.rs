//! The `date` header's IMF-fixdate (RFC 9110 §5.6.7):
//! `Sun, 06 Nov 1994 08:49:37 GMT`, from a [`SystemTime`].

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The length of an IMF-fixdate.
pub const IMF_FIXDATE_LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `time` as an IMF-fixdate, to the second; times before 1970 are written
/// as the epoch and years past 9999 as 9999.
pub fn imf_fixdate(time: SystemTime) -> [u8; IMF_FIXDATE_LEN] {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(253_402_300_799); // 9999-12-31T23:59:59Z
    format_secs(secs)
}

thread_local! {
    static CACHE: Cell<(u64, [u8; IMF_FIXDATE_LEN])> = const { Cell::new((u64::MAX, [0; IMF_FIXDATE_LEN])) };
}

/// [`imf_fixdate`] with the last second's string cached per thread (a
/// worker writes many replies per second).
pub fn imf_fixdate_cached(time: SystemTime) -> [u8; IMF_FIXDATE_LEN] {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let (cached_secs, text) = cache.get();
        if cached_secs == secs {
            return text;
        }
        let text = imf_fixdate(time);
        cache.set((secs, text));
        text
    })
}

fn format_secs(secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], rem / 3600);
    two_digits(&mut out[20..22], rem % 3600 / 60);
    two_digits(&mut out[23..25], rem % 60);
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), Howard
/// Hinnant's `civil_from_days` for the proleptic Gregorian calendar (the
/// access log's timestamps use it too).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_imf_fixdate() {
        let cases: [(u64, &str); 7] = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 GMT"),
            (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
            (1_796_083_200, "Tue, 01 Dec 2026 00:00:00 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (secs, want) in cases {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(std::str::from_utf8(&imf_fixdate(time)), Ok(want), "{secs}");
            assert_eq!(
                std::str::from_utf8(&imf_fixdate_cached(time)),
                Ok(want),
                "{secs}"
            );
        }
    }

    #[test]
    fn the_cache_changes_with_the_second() {
        let t = UNIX_EPOCH + Duration::from_millis(784_111_777_900);
        assert_eq!(&imf_fixdate_cached(t)[17..25], b"08:49:37");
        assert_eq!(
            &imf_fixdate_cached(t + Duration::from_millis(100))[17..25],
            b"08:49:38"
        );
    }
}
