//! A small `--key value` / `--key=value` parser: every option takes a value,
//! unknown options are errors.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub struct Args {
    map: BTreeMap<String, String>,
}

impl Args {
    pub fn parse(items: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut map = BTreeMap::new();
        let mut it = items.into_iter();
        while let Some(item) = it.next() {
            let Some(key) = item.strip_prefix("--") else {
                return Err(format!("unexpected argument {item:?}"));
            };
            let (key, value) = match key.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                    (key.to_owned(), v)
                }
            };
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("--{key} given twice"));
            }
        }
        Ok(Args { map })
    }

    pub fn opt<T: FromStr>(&mut self, key: &str) -> Result<Option<T>, String> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{key}: cannot parse {v:?}")),
        }
    }

    pub fn get<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        Ok(self.opt(key)?.unwrap_or(default))
    }

    pub fn required(&mut self, key: &str) -> Result<String, String> {
        self.map
            .remove(key)
            .ok_or_else(|| format!("--{key} is required"))
    }

    pub fn duration(&mut self, key: &str) -> Result<Option<Duration>, String> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .ok_or_else(|| format!("--{key}: {v:?} is not a duration (e.g. 5, 2.5s, 300ms)")),
        }
    }

    /// Fail on options nobody asked for.
    pub fn finish(self) -> Result<(), String> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("unknown option --{k}")),
        }
    }
}

/// `5`, `2.5s`, `300ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1.0)
    };
    let secs: f64 = num.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let mut a = Args::parse(["--a", "1", "--b=2s"].map(String::from)).unwrap();
        assert_eq!(a.get::<u32>("a", 0).unwrap(), 1);
        assert_eq!(a.duration("b").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(a.get::<u32>("c", 7).unwrap(), 7);
        a.finish().unwrap();
        assert!(Args::parse(["x"].map(String::from)).is_err());
        let a = Args::parse(["--zzz", "1"].map(String::from)).unwrap();
        assert!(a.finish().is_err());
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
    }
}
