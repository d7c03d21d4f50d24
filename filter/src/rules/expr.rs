//! `when` conditions: Kamailio's `&&`, `||`, `!`, parentheses, `==`, `!=`, `=~`, literals,
//! `$null`, and the test functions, parsed once into a tree and evaluated per message.

use regex_lite::Regex;

use super::lex::Token;
use super::pvar::{Pvar, Scope};
use super::{Hook, RuleErrorKind};
use crate::host::SipMessage;
use crate::nameaddr::NameAddr;

#[derive(Debug, Clone)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, bool, Operand),
    Matches(Operand, Regex),
    Truthy(Operand),
    IsMethod(Vec<String>),
    HasTotag,
    CheckStatus(Regex),
}

#[derive(Debug, Clone)]
pub enum Operand {
    Var(Pvar),
    Str(String),
    Int(i64),
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Str(String),
    Int(i64),
}

impl Operand {
    fn value<M: SipMessage + ?Sized>(&self, msg: &M, reply: Option<&M>, scope: Scope<'_>) -> Value {
        match self {
            Operand::Var(v) => v.get_in(msg, reply, scope).map_or(Value::Null, Value::Str),
            Operand::Str(s) => Value::Str(s.clone()),
            Operand::Int(n) => Value::Int(*n),
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Str(s)) | (Value::Str(s), Value::Int(x)) => {
            s.trim().parse::<i64>() == Ok(*x)
        }
        _ => a == b,
    }
}

impl Expr {
    pub fn eval<M: SipMessage + ?Sized>(&self, msg: &M, reply: Option<&M>) -> bool {
        self.eval_in(msg, reply, Scope::default())
    }

    /// Evaluated with the `$uac_req` fields and event variables of `scope`.
    pub fn eval_in<M: SipMessage + ?Sized>(
        &self,
        msg: &M,
        reply: Option<&M>,
        scope: Scope<'_>,
    ) -> bool {
        match self {
            Expr::Or(a, b) => a.eval_in(msg, reply, scope) || b.eval_in(msg, reply, scope),
            Expr::And(a, b) => a.eval_in(msg, reply, scope) && b.eval_in(msg, reply, scope),
            Expr::Not(e) => !e.eval_in(msg, reply, scope),
            Expr::Compare(a, eq, b) => {
                equal(&a.value(msg, reply, scope), &b.value(msg, reply, scope)) == *eq
            }
            Expr::Matches(a, re) => match a.value(msg, reply, scope) {
                Value::Null => false,
                Value::Str(s) => re.is_match(&s),
                Value::Int(n) => re.is_match(&n.to_string()),
            },
            Expr::Truthy(a) => match a.value(msg, reply, scope) {
                Value::Null => false,
                Value::Str(s) => !s.is_empty() && s != "0",
                Value::Int(n) => n != 0,
            },
            Expr::IsMethod(methods) => Pvar::Method
                .get(msg, reply)
                .is_some_and(|m| methods.iter().any(|x| x.eq_ignore_ascii_case(&m))),
            Expr::HasTotag => msg.header("To").is_some_and(|to| {
                NameAddr::parse(&to).is_some_and(|na| na.param(&to, "tag").is_some())
            }),
            Expr::CheckStatus(re) => reply
                .unwrap_or(msg)
                .status()
                .is_some_and(|s| re.is_match(&s.to_string())),
        }
    }
}

/// Kamailio compiles script regexes case-insensitive (REG_ICASE).
pub fn regex(pattern: &str) -> Result<Regex, RuleErrorKind> {
    regex_lite::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .map_err(|e| RuleErrorKind::BadRegex(pattern.to_owned(), e.to_string()))
}

/// Parses a whole condition.
pub fn parse(tokens: &[Token], hook: Hook) -> Result<Expr, RuleErrorKind> {
    let mut p = Parser {
        tokens,
        pos: 0,
        hook,
    };
    let e = p.or()?;
    match p.tokens.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(RuleErrorKind::Syntax(format!(
            "unexpected {t:?} after the condition"
        ))),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    hook: Hook,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Token) -> Result<(), RuleErrorKind> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(RuleErrorKind::Syntax(format!(
                "expected {want:?}, found {other:?}"
            ))),
        }
    }

    fn or(&mut self) -> Result<Expr, RuleErrorKind> {
        let mut e = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, RuleErrorKind> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, RuleErrorKind> {
        match self.peek() {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect(&Token::RParen)?;
                Ok(e)
            }
            Some(Token::Ident(_)) => self.test_function(),
            _ => self.comparison(),
        }
    }

    fn operand(&mut self) -> Result<Operand, RuleErrorKind> {
        match self.next() {
            Some(Token::Pvar(name, arg)) => {
                Ok(Operand::Var(Pvar::from_name(name, arg.as_deref())?))
            }
            Some(Token::Str(s)) => Ok(Operand::Str(s.clone())),
            Some(Token::Int(n)) => Ok(Operand::Int(*n)),
            other => Err(RuleErrorKind::Syntax(format!(
                "expected a value, found {other:?}"
            ))),
        }
    }

    fn comparison(&mut self) -> Result<Expr, RuleErrorKind> {
        let left = self.operand()?;
        match self.peek() {
            Some(Token::Eq) | Some(Token::Ne) => {
                let eq = self.next() == Some(&Token::Eq);
                Ok(Expr::Compare(left, eq, self.operand()?))
            }
            Some(Token::Match) => {
                self.pos += 1;
                match self.next() {
                    Some(Token::Str(pattern)) => Ok(Expr::Matches(left, regex(pattern)?)),
                    other => Err(RuleErrorKind::Syntax(format!(
                        "`=~` needs a string literal (the regex is compiled once), found {other:?}"
                    ))),
                }
            }
            _ => Ok(Expr::Truthy(left)),
        }
    }

    fn test_function(&mut self) -> Result<Expr, RuleErrorKind> {
        let Some(Token::Ident(name)) = self.next().cloned() else {
            unreachable!("test_function is only entered on an identifier");
        };
        self.expect(&Token::LParen)?;
        let mut args = Vec::new();
        while let Some(Token::Str(s)) = self.peek() {
            args.push(s.clone());
            self.pos += 1;
            if self.peek() == Some(&Token::Comma) {
                self.pos += 1;
            }
        }
        self.expect(&Token::RParen)?;
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(RuleErrorKind::ArgCount {
                    function: name.clone(),
                    expected: n.to_string(),
                    got: args.len(),
                })
            }
        };
        match name.as_str() {
            "is_method" => {
                arity(1)?;
                let methods: Vec<String> =
                    args[0].split('|').map(|m| m.trim().to_owned()).collect();
                if methods.iter().any(|m| m.is_empty()) {
                    return Err(RuleErrorKind::Syntax(format!(
                        "is_method({:?}): empty method name",
                        args[0]
                    )));
                }
                Ok(Expr::IsMethod(methods))
            }
            "has_totag" => {
                arity(0)?;
                Ok(Expr::HasTotag)
            }
            "t_check_status" => {
                arity(1)?;
                if self.hook == Hook::Request {
                    return Err(RuleErrorKind::WrongHook {
                        function: name,
                        hook: self.hook,
                    });
                }
                Ok(Expr::CheckStatus(regex(&args[0])?))
            }
            _ => Err(RuleErrorKind::UnknownFunction(name)),
        }
    }
}
