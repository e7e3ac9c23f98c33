//! Condition operators (IAM-style), each belonging to a family that fits
//! certain value types.

use crate::key::ValueType;

/// Declares [`Operator`] and [`ALL`], every operator with its name, which is
/// its variant's name: the names cannot drift from the variants.
macro_rules! operators {
    ($($(#[$doc:meta])* $operator:ident,)*) => {
        /// A condition operator.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operator {
            $($(#[$doc])* $operator,)*
        }

        const ALL: [(Operator, &str); 20] = [$((Operator::$operator, stringify!($operator)),)*];
    };
}

operators! {
    /// Exact match (domains: case-insensitive, leading dot = apex and subdomains).
    StringEquals,
    /// Negated [`Operator::StringEquals`]: none of the values may match.
    StringNotEquals,
    /// Exact match ignoring case.
    StringEqualsIgnoreCase,
    /// Negated [`Operator::StringEqualsIgnoreCase`].
    StringNotEqualsIgnoreCase,
    /// Glob: `*` any run of characters, `?` exactly one.
    StringLike,
    /// Negated [`Operator::StringLike`].
    StringNotLike,
    /// `=`.
    NumericEquals,
    /// `≠` every value.
    NumericNotEquals,
    /// `<`.
    NumericLessThan,
    /// `≤`.
    NumericLessThanEquals,
    /// `>`.
    NumericGreaterThan,
    /// `≥`.
    NumericGreaterThanEquals,
    /// Inside a CIDR (or equal to an address).
    IpAddress,
    /// Inside none of the CIDRs.
    NotIpAddress,
    /// Before an instant, or before a time of day.
    DateLessThan,
    /// After an instant, or after a time of day.
    DateGreaterThan,
    /// At an instant, or at a time of day (to the second).
    DateEquals,
    /// At none of the instants or times of day.
    DateNotEquals,
    /// At or before.
    DateLessThanEquals,
    /// At or after.
    DateGreaterThanEquals,
}

/// Operators grouped by the value types they compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `String*`: text and domains.
    String,
    /// `Numeric*`: numbers.
    Numeric,
    /// `IpAddress`, `NotIpAddress`: IP addresses.
    Ip,
    /// `Date*`: time.
    Date,
}

impl Operator {
    /// Every operator name, for the CRD schema's `enum`.
    pub const NAMES: [&'static str; 20] = {
        let mut names = [""; 20];
        let mut i = 0;
        while i < ALL.len() {
            names[i] = ALL[i].1;
            i += 1;
        }
        names
    };

    /// Parses an operator name (case-sensitive, as in IAM).
    pub fn parse(name: &str) -> Option<Operator> {
        ALL.iter().find(|(_, n)| *n == name).map(|(op, _)| *op)
    }

    /// The operator's name.
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(op, _)| *op == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// The family, which decides the value types the operator fits.
    pub fn family(self) -> Family {
        use Operator::*;
        match self {
            StringEquals
            | StringNotEquals
            | StringEqualsIgnoreCase
            | StringNotEqualsIgnoreCase
            | StringLike
            | StringNotLike => Family::String,
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => Family::Numeric,
            IpAddress | NotIpAddress => Family::Ip,
            DateLessThan
            | DateGreaterThan
            | DateEquals
            | DateNotEquals
            | DateLessThanEquals
            | DateGreaterThanEquals => Family::Date,
        }
    }

    /// True when the condition holds only if *none* of its values match.
    pub fn is_negated(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | NotIpAddress
                | DateNotEquals
        )
    }

    /// Whether this operator can compare values of the given type.
    pub fn fits(self, value_type: ValueType) -> bool {
        matches!(
            (self.family(), value_type),
            (Family::String, ValueType::String | ValueType::Domain)
                | (Family::Numeric, ValueType::Number)
                | (Family::Ip, ValueType::Ip)
                | (Family::Date, ValueType::Time)
        )
    }

    /// The known operator closest to a misspelt `name` (by edit distance,
    /// ignoring case), if one is close enough to be what was meant.
    pub fn closest(name: &str) -> Option<&'static str> {
        crate::key::closest(name, Operator::NAMES.iter().copied())
    }

    /// The operators that fit a value type, for error messages.
    pub fn fitting(value_type: ValueType) -> Vec<&'static str> {
        ALL.iter()
            .filter(|(op, _)| op.fits(value_type))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Operator::NAMES {
            assert_eq!(Operator::parse(name).expect(name).as_str(), name);
        }
        assert_eq!(Operator::parse("stringequals"), None);
    }

    #[test]
    fn fit_table() {
        use ValueType::*;
        let cases = [
            (Operator::StringEquals, [true, true, false, false, false]),
            (Operator::StringNotLike, [true, true, false, false, false]),
            (
                Operator::NumericLessThan,
                [false, false, true, false, false],
            ),
            (Operator::IpAddress, [false, false, false, true, false]),
            (
                Operator::DateGreaterThan,
                [false, false, false, false, true],
            ),
        ];
        for (op, fits) in cases {
            for (value_type, fit) in [String, Domain, Number, Ip, Time].into_iter().zip(fits) {
                assert_eq!(op.fits(value_type), fit, "{op} on {value_type:?}");
            }
        }
    }
}
