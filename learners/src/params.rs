//! Hyperparameters arrive as `name → text` (from `--param k=v` or a search config) and are
//! read by each family; anything left unread is an error, so typos never pass silently.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Result, TrainError};

pub type ParamMap = BTreeMap<String, String>;

pub struct ParamReader<'a> {
    family: &'a str,
    params: &'a ParamMap,
    read: BTreeSet<&'a str>,
}

impl<'a> ParamReader<'a> {
    pub fn new(family: &'a str, params: &'a ParamMap) -> Self {
        ParamReader { family, params, read: BTreeSet::new() }
    }

    fn raw(&mut self, name: &'static str) -> Option<&'a str> {
        self.read.insert(name);
        self.params.get(name).map(String::as_str)
    }

    pub fn f64(&mut self, name: &'static str, default: f64) -> Result<f64> {
        match self.raw(name) {
            None => Ok(default),
            Some(s) => s.trim().parse::<f64>().map_err(|_| TrainError::InvalidParam {
                name: name.into(),
                message: format!("{s:?} is not a number"),
            }),
        }
    }

    pub fn usize(&mut self, name: &'static str, default: usize) -> Result<usize> {
        match self.raw(name) {
            None => Ok(default),
            Some(s) => {
                let v = s.trim().parse::<f64>().ok().filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 1e12);
                v.map(|v| v as usize).ok_or_else(|| TrainError::InvalidParam {
                    name: name.into(),
                    message: format!("{s:?} is not a non-negative integer"),
                })
            }
        }
    }

    pub fn i32(&mut self, name: &'static str, default: i32) -> Result<i32> {
        match self.raw(name) {
            None => Ok(default),
            Some(s) => {
                let v = s.trim().parse::<f64>().ok().filter(|v| v.fract() == 0.0 && v.abs() < 1e9);
                v.map(|v| v as i32).ok_or_else(|| TrainError::InvalidParam {
                    name: name.into(),
                    message: format!("{s:?} is not an integer"),
                })
            }
        }
    }

    /// One of `choices` (the first is the default when the parameter is absent).
    pub fn choice(&mut self, name: &'static str, choices: &[&'static str]) -> Result<&'static str> {
        let default = choices.first().copied().unwrap_or_default();
        match self.raw(name) {
            None => Ok(default),
            Some(s) => {
                choices.iter().copied().find(|c| *c == s.trim()).ok_or_else(|| TrainError::InvalidParam {
                    name: name.into(),
                    message: format!("{s:?} is not one of {}", choices.join(", ")),
                })
            }
        }
    }

    /// Fails on any parameter the family did not read.
    pub fn finish(self) -> Result<()> {
        match self.params.keys().find(|k| !self.read.contains(k.as_str())) {
            Some(k) => Err(TrainError::UnknownParam { family: self.family.into(), name: k.clone() }),
            None => Ok(()),
        }
    }
}
