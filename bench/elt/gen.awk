# bench/elt/gen.awk — the rows of bench/elt.sh, deterministic: awk -v rows=N -f gen.awk > x.csv
#
# Columns: id (integer), name, email, amount (numeric, 2 decimals), created (YYYY-MM-DD),
# active (true/false), note (text; some notes hold a comma or double quotes, so they are quoted
# the CSV way; one row in 16 has an empty note). About 120 bytes per row.
BEGIN {
  if (rows == "") rows = 1000000
  nf = split("Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Karla Leon Mia Noah Olga Paul Rosa Sven Tina Uwe Vera Yann Zoe", first, " ")
  nl = split("Adams Baker Clark Davis Evans Fischer Garcia Hall Ito Jones King Lopez Meyer Novak Olsen Price Quinn Rossi Schmidt Weber Young", last, " ")
  nn = split("delivered to the front desk, signed by recipient|waiting for the customer to confirm the address|paid by card at checkout|call back before noon about the second parcel|gift wrap requested, no invoice in the box|express shipping upgrade granted by support|returned: customer said \"wrong size\", refund issued|invoice copy sent again by email to accounting", note, "|")
  for (k = 1; k <= nn; k++) {
    # CSV quoting: a field with a comma or a quote is enclosed, quotes doubled.
    if (note[k] ~ /[,"]/) { q = note[k]; gsub(/"/, "\"\"", q); note[k] = "\"" q "\"" }
  }
  split("31 28 31 30 31 30 31 31 30 31 30 31", mdays, " ")
  nd = 0
  for (y = 2020; y <= 2025; y++)
    for (m = 1; m <= 12; m++) {
      days = mdays[m] + (m == 2 && y % 4 == 0)
      for (d = 1; d <= days; d++) day[nd++] = sprintf("%04d-%02d-%02d", y, m, d)
    }
  print "id,name,email,amount,created,active,note"
  for (i = 1; i <= rows; i++) {
    f = first[i % nf + 1]
    l = last[int(i / nf) % nl + 1]
    cents = (i * 7919) % 2500000
    k = i % 16
    printf "%d,%s %s,%s.%s.%d@mail.example.com,%d.%02d,%s,%s,%s\n", i, f, l, tolower(f), tolower(l), i, int(cents / 100), cents % 100, day[(i * 37) % nd], (i % 7 == 0 ? "false" : "true"), (k == 0 ? "" : note[k % nn + 1])
  }
}
