import csv,collections,datetime,re,sys
thr=sys.argv[1]; log=sys.argv[2]; tgts=sys.argv[3].split(',')
rows=list(csv.DictReader(open(thr)))
by=collections.defaultdict(dict)
for r in rows:
    if r['ticks']: by[int(r['t'])][r['name']]=int(r['ticks'])
ts=sorted(by)
def at(t):
    # latest sample <= t
    c=[x for x in ts if x<=t]; return by[c[-1]] if c else by[ts[0]]
day=datetime.datetime.utcfromtimestamp(ts[0]).date()
for line in open(log):
    m=re.match(r'\[load (\d\d:\d\d:\d\d)\] rep (\d) c=(\d+) (\w+) on (\w+): requests=(\d+) duration_us=(\d+)',line)
    if not m or m.group(5) not in tgts: continue
    end=datetime.datetime.combine(day,datetime.time.fromisoformat(m.group(1))).replace(tzinfo=datetime.timezone.utc).timestamp()
    end=int(end); start=end-int(int(m.group(7))/1e6)
    a,b=at(start),at(end)
    d={k:(b.get(k,0)-a.get(k,0)) for k in b if b.get(k,0)-a.get(k,0)>0}
    secs=max(end-start,1)
    print(f"rep{m.group(2)} c={m.group(3):>2} {m.group(4):9} {m.group(5):7}", {k:f"{v/secs:.0f}%" for k,v in d.items()})
